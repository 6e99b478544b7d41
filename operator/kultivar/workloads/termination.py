"""Writing a workload's result to the container's termination-message file.

Workload pods have no Kubernetes API access; the only channel back to the operator is the file at
``terminationMessagePath``. The encoding (and its 4 KiB fitting rules) and the operator's decoding are one codec in
:mod:`kultivar.api.contracts`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kultivar.api.contracts import TERMINATION_LIMIT, Contract, encode_termination


def write_termination(result: Contract | Mapping[str, Any], path: str, limit: int = TERMINATION_LIMIT) -> str:
    """Write the encoded result to the termination-message file and return it."""
    text = encode_termination(result, limit)
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text
