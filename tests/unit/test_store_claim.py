"""The artifact store's claim is looked up once a minute while found, every time while missing."""

from __future__ import annotations

from typing import Any

from kultivar.config import OperatorConfig
from kultivar.k8s import observe


class FakeApi:
    def __init__(self) -> None:
        self.exists = False
        self.asked = 0

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked += 1
        return {"metadata": {"name": name}} if self.exists else None


def test_a_found_claim_is_remembered_a_missing_one_is_asked_again(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(observe.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(observe, "_claims_seen", {})
    api, config = FakeApi(), OperatorConfig(store_url="file:///store", store_pvc="claim")
    assert observe.store_claim(api, config, "ns") is False  # type: ignore[arg-type]
    assert observe.store_claim(api, config, "ns") is False  # type: ignore[arg-type]
    assert api.asked == 2
    api.exists = True
    assert observe.store_claim(api, config, "ns") is True  # type: ignore[arg-type]
    clock[0] += 30
    assert observe.store_claim(api, config, "ns") is True  # type: ignore[arg-type]
    assert api.asked == 3
    api.exists = False
    clock[0] += observe.CLAIM_SEEN_SECONDS
    assert observe.store_claim(api, config, "ns") is False  # type: ignore[arg-type]
    assert observe.store_claim(api, config, "other") is False  # type: ignore[arg-type]
    assert api.asked == 5
