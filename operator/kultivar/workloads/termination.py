"""The result of a workload pod, carried in the container's termination message.

Workload pods have no Kubernetes API access; the only channel back to the operator is the file at
``terminationMessagePath``, which the kubelet caps at 4096 bytes. :func:`encode_result` makes the result fit by
dropping optional bulky fields first and shortening the message last; :func:`decode_result` is what the operator
uses to read it back, tolerating anything else the kubelet may have put there (with
``terminationMessagePolicy: FallbackToLogsOnError`` that is the tail of the pod log, e.g. a traceback).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

LIMIT = 4096
# Dropped in this order until the message fits; the essential fields (ok, reason, digest, uris, score) stay.
DROPPABLE = ("features", "bestParams", "failures", "warnings", "timings", "metrics")
ESSENTIAL_OK = ("ok", "digest", "rows", "columns", "snapshotUri", "profileUri", "metric", "score", "artifact",
                "manifestUri", "datasetDigest", "sklearnVersion", "adopted")
ESSENTIAL_FAIL = ("ok", "reason", "check", "retryable")
ELLIPSIS = "…"


def _clean(value: Any) -> Any:
    # json.dumps would write NaN/Infinity, which is not JSON; the operator's parser would reject the message.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _dump(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    budget = max(0, max_bytes - len(ELLIPSIS.encode()))
    return data[:budget].decode(errors="ignore") + ELLIPSIS


def encode_result(result: dict[str, Any], limit: int = LIMIT) -> str:
    """Compact JSON of ``result`` no longer than ``limit`` bytes (UTF-8)."""
    out = _clean(dict(result))
    data = _dump(out)
    for key in DROPPABLE:
        if len(data) <= limit:
            break
        if key in out:
            del out[key]
            data = _dump(out)
    if len(data) > limit and isinstance(out.get("message"), str):
        excess = len(data) - limit
        message_bytes = len(out["message"].encode())
        out["message"] = _truncate_utf8(out["message"], max(0, message_bytes - excess - 8))
        data = _dump(out)
        while len(data) > limit and out["message"]:
            out["message"] = _truncate_utf8(out["message"], len(out["message"].encode()) // 2)
            data = _dump(out)
    if len(data) > limit:
        # Something unexpected is huge (e.g. a very long URI): keep only what the operator cannot do without.
        keep = ESSENTIAL_OK if out.get("ok") else ESSENTIAL_FAIL
        out = {k: out[k] for k in keep if k in out}
        out["message"] = "result truncated to fit the termination message; see the pod log"
        data = _dump(out)
    if len(data) > limit:
        out = {"ok": bool(result.get("ok")), "reason": "ResultTooLarge",
               "message": "the result did not fit in the termination message; see the pod log"}
        data = _dump(out)
    return data.decode()


def write_termination(result: dict[str, Any], path: str, limit: int = LIMIT) -> str:
    """Write the encoded result to the termination-message file and return it."""
    text = encode_result(result, limit)
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def _parse(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(value, dict) and isinstance(value.get("ok"), bool)):
        return None
    if not value["ok"]:
        value.setdefault("reason", "Failed")
        value.setdefault("message", "")
    return value


def decode_result(text: str | None) -> dict[str, Any]:
    """The result a pod reported, or ``{"ok": False, "reason": "UnreadableResult", ...}`` for anything else."""
    raw = (text or "").strip()
    value = _parse(raw) if raw else None
    if value is not None:
        return value
    # With FallbackToLogsOnError the text is the log tail; the CLI prints the result as its last line.
    for line in reversed(raw.splitlines()):
        line = line.strip()
        if line.startswith("{") and (value := _parse(line)) is not None:
            return value
    tail = raw[-1000:]
    message = ("the pod ended without reporting a result" if not raw else
               f"the pod did not report a result; the end of its output was: {tail}")
    return {"ok": False, "reason": "UnreadableResult", "message": message}
