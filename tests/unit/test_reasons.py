"""One vocabulary of condition reasons (domain/reasons.py): every reason a planner writes as a literal is in it."""

from __future__ import annotations

import re
from pathlib import Path

from kultivar.domain.reasons import Reason

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "kultivar"
# A reason written as a string literal where a condition is decided: blocked("X", ...), not_ready("X", ...),
# Cond(TYPE, status, "X", ...).
LITERAL = re.compile(r'(?:blocked|not_ready)\(\s*"([A-Za-z]+)"|Cond\([A-Z_]+, [^,]+, "([A-Za-z]+)"')


def test_every_literal_condition_reason_is_a_member() -> None:
    members = {r.value for r in Reason}
    unknown = sorted(
        f"{path.relative_to(OPERATOR)}: {m.group(1) or m.group(2)}"
        for path in [*OPERATOR.glob("domain/*.py"), *OPERATOR.glob("k8s/*.py")]
        for m in LITERAL.finditer(path.read_text())
        if (m.group(1) or m.group(2)) not in members)
    assert not unknown, f"add these reasons to kultivar.domain.reasons.Reason: {unknown}"
