"""Two operator replicas against the real API server: only the Lease holder reconciles; when it is killed the
standby takes the Lease over within the lease duration and reconciles, and no Job is ever created twice.

Which replica wrote is read from each process's own log (every reconcile logs `<key> reconciled in`), so the
assertions hold even while the session's shared operator also runs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kapi import create, jobs, sample
from operator_process import OperatorProcess

from helpers import wait_for
from kultivar.domain.leadership import Timing

# Takeover bound: the lease duration, one standby retry, and a generous margin for a loaded test machine.
TAKEOVER_BOUND = Timing().lease_duration + Timing().retry_period + 30


def _lease(kube, namespace: str, name: str) -> dict:
    status, out = kube.raw("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    return out if status == 200 else {}


def _holder(kube, namespace: str, name: str) -> str:
    return (_lease(kube, namespace, name).get("spec") or {}).get("holderIdentity") or ""


def _reconciled(replica: OperatorProcess, key: str) -> bool:
    text = replica.log_path.read_text(errors="replace") if replica.log_path.exists() else ""
    return f"{key} reconciled in" in text


def _reconciles_of(replica: OperatorProcess, namespace: str) -> list[str]:
    text = replica.log_path.read_text(errors="replace") if replica.log_path.exists() else ""
    return re.findall(rf"\w+ {namespace}/\S+ reconciled in", text)


def _dataset(name: str) -> dict:
    body = sample("Dataset")
    body["metadata"]["name"] = name
    return body


@pytest.fixture
def replicas(kube, namespace: str, store_dir: Path, tmp_path: Path) -> Iterator[tuple[OperatorProcess, ...]]:
    lease = f"kultivar-{secrets.token_hex(3)}"
    env = {"KULTIVAR_LEASE_NAMESPACE": namespace, "KULTIVAR_LEASE_NAME": lease}
    pair = tuple(OperatorProcess(kube.kubeconfig, tmp_path / n, store_dir, extra_env=env) for n in ("a", "b"))
    for replica in pair:
        replica.workdir.mkdir()
    yield pair
    for replica in pair:
        replica.stop()


def test_one_replica_reconciles_and_the_standby_takes_over(kube, namespace: str, replicas) -> None:
    a, b = replicas
    lease = a.extra_env["KULTIVAR_LEASE_NAME"]
    a.start()
    wait_for(lambda: _holder(kube, namespace, lease) == a.identity, timeout=60,
             message=f"replica a holding Lease {lease}\n{a.log_tail()}")
    b.start()
    wait_for(lambda: "waiting for Lease" in b.log_path.read_text(errors="replace"), timeout=60,
             message=f"replica b standing by\n{b.log_tail()}")

    create(kube, namespace, _dataset("first"))
    wait_for(lambda: [j["metadata"]["name"] for j in jobs(kube, namespace)] == ["first-validate-1"], timeout=60,
             message=f"the leader creating the validation Job\n{a.log_tail()}")
    wait_for(lambda: _reconciled(a, f"Dataset {namespace}/first"), timeout=30, message="a's reconcile logged")
    # The standby saw the same events (its watches run) but reconciled nothing and never took the Lease.
    assert b.proc is not None and b.proc.poll() is None, b.log_tail()
    assert _reconciles_of(b, namespace) == [], b.log_tail()
    assert _holder(kube, namespace, lease) == a.identity
    transitions = _lease(kube, namespace, lease)["spec"].get("leaseTransitions", 0)

    a.kill()  # SIGKILL: no release, the Lease must expire
    wait_for(lambda: _holder(kube, namespace, lease) == b.identity, timeout=TAKEOVER_BOUND, interval=0.5,
             message=f"replica b taking the Lease over\n{b.log_tail()}")
    assert _lease(kube, namespace, lease)["spec"]["leaseTransitions"] == transitions + 1

    create(kube, namespace, _dataset("second"))
    wait_for(lambda: _reconciled(b, f"Dataset {namespace}/second"), timeout=60,
             message=f"the new leader reconciling a new object\n{b.log_tail()}")
    # It also reconciled what the old leader had done (the keys were queued while it stood by) without
    # creating anything twice: deterministic Job names, read from the API server's state.
    wait_for(lambda: _reconciled(b, f"Dataset {namespace}/first"), timeout=60, message="b reconciling first")
    names = sorted(j["metadata"]["name"] for j in jobs(kube, namespace))
    assert names == ["first-validate-1", "second-validate-1"], names


def test_a_stopped_leader_hands_the_lease_over(kube, namespace: str, replicas) -> None:
    """SIGTERM (a rolling update): the leader releases the Lease, so the standby need not wait it out."""
    a, b = replicas
    lease = a.extra_env["KULTIVAR_LEASE_NAME"]
    a.start()
    wait_for(lambda: _holder(kube, namespace, lease) == a.identity, timeout=60, message=a.log_tail())
    b.start()
    wait_for(lambda: "waiting for Lease" in b.log_path.read_text(errors="replace"), timeout=60,
             message=b.log_tail())
    a.stop()
    assert "released Lease" in a.log_path.read_text(errors="replace"), a.log_tail()
    wait_for(lambda: _holder(kube, namespace, lease) == b.identity, timeout=TAKEOVER_BOUND,
             message=f"replica b taking the released Lease\n{b.log_tail()}")
