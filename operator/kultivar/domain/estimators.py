"""Checking an estimator class path before a Job is spent on it."""

from __future__ import annotations

import importlib
from functools import lru_cache


@lru_cache(maxsize=256)
def estimator_problem(class_path: str, allowed_packages: tuple[str, ...]) -> str | None:
    """Why class_path is not a usable estimator, or None.

    Only packages on the allow-list are imported in the operator (importing runs module code); any other
    path is left for the training pod, which reports EstimatorImportFailed itself if it cannot import it.
    """
    module_name, _, class_name = class_path.rpartition(".")
    if module_name.split(".")[0] not in allowed_packages:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        return f"module {module_name!r} cannot be imported ({e}); check spec.estimator.className"
    cls = getattr(module, class_name, None)
    if cls is None:
        return f"{module_name!r} has no class {class_name!r}; check spec.estimator.className"
    if not isinstance(cls, type) or not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
        return f"{class_path!r} is not a scikit-learn estimator (it needs fit and get_params)"
    return None
