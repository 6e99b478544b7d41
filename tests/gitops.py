"""What GitOps tools conclude from a Kultivar object's status: Argo CD's Lua health checks, and kstatus (Flux).

Argo CD runs the chart's argocd/<Kind>.lua with gopher-lua (Lua 5.1) and, for health scripts from argocd-cm,
only the package, base and table libraries plus a reduced os: no string library. :func:`argocd_health` runs
the same file in a real Lua 5.1 (lupa) with the same restriction, the object as the global ``obj``, and
returns the table the script returns.

:func:`kstatus` is kstatus's algorithm for a custom resource (sigs.k8s.io/cli-utils pkg/kstatus/status,
``Compute``: deletion, then observedGeneration, then the Reconciling/Stalled conditions, then the Ready
condition), which Flux's ``wait: true`` and ``healthChecks`` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LUA_DIR = ROOT / "charts" / "kultivar" / "argocd"
KINDS = ("Dataset", "TrainingRun", "Model", "Deployment")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Argo CD opens package, base, table and a "safe" os (only time/date/clock); everything else goes.
_SANDBOX = """
debug.setmetatable("", nil)
string = nil
io = nil
math = nil
coroutine = nil
debug = nil
os = nil
dofile = nil
loadfile = nil
"""


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value if v is not None])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)  # gopher-lua numbers are float64
    raise TypeError(f"cannot pass {type(value).__name__} to Lua")


def argocd_health(obj: dict[str, Any], kind: str | None = None) -> dict[str, str]:
    """Run the chart's Argo CD health check for the object's kind; returns {"status", "message"}."""
    from lupa import lua51  # type: ignore[import-not-found]

    kind = kind or obj["kind"]
    script = (LUA_DIR / f"{kind}.lua").read_text()
    lua = lua51.LuaRuntime(register_eval=False, unpack_returned_tuples=False)
    lua.execute(_SANDBOX)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    out = {"status": result["status"], "message": result["message"] or ""}
    assert out["status"] in ARGO_STATUSES, f"{kind}.lua returned an invalid status {out['status']!r}"
    return out


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus's verdict on a custom resource: Current, InProgress, Failed or Terminating."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    observed = (obj.get("status") or {}).get("observedGeneration")
    if meta.get("generation") is not None and observed is not None and observed != meta["generation"]:
        return "InProgress"
    for c in _conditions(obj):
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return "InProgress"
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return "Failed"
    for c in _conditions(obj):
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return "Current"
            if c.get("status") in ("False", "Unknown"):
                return "InProgress"
    return "Current"
