"""Objects the API server refused to create for us: say why on the owner, and stop asking until its spec changes.

A 4xx answer to a create (other than 409, the object exists, and 429, throttled) means the request itself is
wrong: a resource quantity the server cannot parse, a name too long, a policy or quota that forbids it. Sending
it again on every resync would change nothing but the load, so the owner gets Ready=False ChildRejected with
the server's message (a Warning Event, as for every failure reason) and is held until its generation changes.
"""

from __future__ import annotations

from typing import Any

from kultivar.domain.conditions import READY, Cond, get_condition
from kultivar.domain.plan import Plan
from kultivar.domain.reasons import Reason

RETRIED = (409, 429)  # conflict (exists, or raced another writer); too many requests


def is_refusal(status: int) -> bool:
    """Whether an API error status means the server will never accept this request as it is."""
    return 400 <= status < 500 and status not in RETRIED


def refused(plan: Plan, kind: str, name: str, message: str) -> Plan:
    """The plan with Ready=False ChildRejected replacing its Ready condition; nothing is requeued."""
    plan.conditions = [c for c in plan.conditions if c.type != READY]
    plan.conditions.append(Cond(READY, False, Reason.CHILD_REJECTED,
                                f"the API server refused {kind} {name}: {message}; fix the spec (nothing is "
                                "retried until it changes)"))
    plan.requeue_after = None
    return plan


def still_refused(obj: dict[str, Any]) -> Plan | None:
    """A plan that changes nothing while the generation that was refused is still the current one."""
    ready = get_condition((obj.get("status") or {}).get("conditions"), READY)
    if not ready or ready.get("reason") != Reason.CHILD_REJECTED:
        return None
    if ready.get("observedGeneration") != obj["metadata"].get("generation"):
        return None
    return Plan(conditions=[Cond(READY, False, Reason.CHILD_REJECTED, ready.get("message", ""))])
