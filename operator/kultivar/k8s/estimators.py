"""Can this estimator class be imported? Asked of a short-lived child Python, never of the operator itself.

Importing scikit-learn (with scipy and pandas) costs the operator ~150 MiB of RSS for the rest of its life, for
a check whose answer rarely changes: the child imports the class, answers, and exits. Answers are cached per
class path, so 500 TrainingRuns naming one estimator cost one child. The training pod checks again in its own
image, so an undecided answer (the child timed out) lets the run proceed rather than refusing it.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading

from kultivar.api.contracts import estimator_not_allowed

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 60.0

# argv: module, class. Prints why the class is unusable; prints nothing when it is a usable estimator.
_PROBE = """
import importlib, sys
module_name, class_name = sys.argv[1], sys.argv[2]
try:
    module = importlib.import_module(module_name)
except ImportError as e:
    print(f"module {module_name!r} cannot be imported ({e}); check spec.estimator.className")
    sys.exit(0)
cls = getattr(module, class_name, None)
if cls is None:
    print(f"{module_name!r} has no class {class_name!r}; check spec.estimator.className")
elif not isinstance(cls, type) or not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
    print(f"{module_name + '.' + class_name!r} is not a scikit-learn estimator (it needs fit and get_params)")
"""

_answers: dict[tuple[str, tuple[str, ...]], str | None] = {}
_lock = threading.Lock()  # one child at a time: workers asking about the same class wait for the first answer


def estimator_problem(class_path: str, packages: tuple[str, ...]) -> str | None:
    """Why ``class_path`` is not a usable estimator in the operator's environment, or None.

    Only classes from permitted packages are imported (importing runs module code); the planner refuses the others
    with EstimatorNotAllowed.
    """
    key = (class_path, packages)
    # Asked on every reconcile of every run: a known answer is returned before anything else (find_spec below
    # walks sys.path with a stat per entry, about a tenth of the operator's CPU at 500 runs at once).
    if key in _answers:
        return _answers[key]
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name or estimator_not_allowed(class_path, packages):
        return None
    if importlib.util.find_spec(module_name.split(".", 1)[0]) is None:
        # A permitted package the operator's image lacks (XGBoost, LightGBM: the runtime image only): the training
        # pod's own check is the only one. find_spec on a top-level name does not import it. Remembered like any
        # answer: the packages an image holds do not change while it runs, and find_spec is the cost avoided above.
        return _remember(key, None)
    with _lock:
        if key in _answers:
            return _answers[key]
        try:
            # -I: the child sees neither the working directory nor PYTHON* variables, only the installed packages.
            out = subprocess.run([sys.executable, "-I", "-c", _PROBE, module_name, class_name], capture_output=True,
                                 text=True, timeout=PROBE_TIMEOUT, check=False)
        except (subprocess.TimeoutExpired, OSError) as e:
            log.warning("could not check estimator %s (%s); the training pod will", class_path, e)
            return None  # not cached: ask again on the next reconcile
        if out.returncode != 0:
            log.warning("estimator check for %s failed: %s", class_path, out.stderr.strip()[-500:])
            return None
        return _remember(key, out.stdout.strip() or None)


def _remember(key: tuple[str, tuple[str, ...]], answer: str | None) -> str | None:
    if len(_answers) < 256:  # bounded: class names come from users' specs
        _answers[key] = answer
    return answer
