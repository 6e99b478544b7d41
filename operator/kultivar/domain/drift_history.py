"""status.drift.history: the judged drift windows, oldest first, bounded. Pure.

status.drift holds the last check only and is replaced whole by every check (a new version's window starts from
scratch); the history is carried from the stored status into each planned one, gains one entry per judged
window, and keeps the newest DRIFT_HISTORY_LIMIT. The report draws drift per feature over time from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kultivar.api.deployment import DRIFT_HISTORY_FEATURES, DRIFT_HISTORY_LIMIT
from kultivar.domain.conditions import parse_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def entry(drift: dict[str, Any]) -> dict[str, Any]:
    """The history entry of a judged window, from the status.drift that check_drift planned for it."""
    unseen = [float(u.get("share", 0.0)) for u in drift.get("unseenCategories") or []]
    out: dict[str, Any] = {
        "time": drift["checkedAt"], "version": drift["version"], "samples": int(drift.get("samples") or 0),
        "drifted": bool(drift.get("drifted")),
        "features": [{"feature": f["feature"], "psi": f["psi"]}
                     for f in (drift.get("topFeatures") or [])[:DRIFT_HISTORY_FEATURES]],
    }
    if drift.get("driftedShare") is not None:
        out["driftedShare"] = drift["driftedShare"]
    out["unseenShare"] = max(unseen, default=0.0)
    return out


def appended(history: list[dict[str, Any]], new: dict[str, Any], limit: int = DRIFT_HISTORY_LIMIT
             ) -> list[dict[str, Any]]:
    """The history with ``new`` in time order, the newest ``limit`` kept. Planning the same check again (a write
    that failed and is retried) replaces its entry instead of adding a second one."""
    kept = [h for h in history if (h.get("time"), h.get("version")) != (new["time"], new["version"])]
    # stable sort: entries written by a leader whose clock ran a little behind still come out in time order
    ordered = sorted([*kept, new], key=lambda h: parse_time(h.get("time")) or EPOCH)
    return ordered[-limit:]


def with_history(drift: dict[str, Any], previous: list[dict[str, Any]] | None, judged: bool) -> dict[str, Any]:
    """The planned status.drift carrying the stored history, plus an entry when this check judged a window."""
    history = list(previous or [])
    if judged:
        history = appended(history, entry(drift))
    out = {k: v for k, v in drift.items() if k != "history"}
    if history:
        out["history"] = history[-DRIFT_HISTORY_LIMIT:]
    return out
