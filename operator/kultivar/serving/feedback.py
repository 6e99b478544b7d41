"""Ground truth from production: the feedback endpoint's contract and the counters it feeds.

``POST /v2/models/<name>/feedback`` takes a batch of labelled predictions::

    {"version": 3,                                   # optional default for every item
     "items": [{"id": "a1b2c3d4e5f6-1f", "version": 3, "prediction": "setosa", "actual": "versicolor"}, ...]}

Per item: ``prediction`` (what the server answered: the class, or the number for a regressor), ``version`` (the
``model_version`` of that answer, a Model version number; the batch-level ``version`` applies to items without
one), ``actual`` (the true label: a class, or a number) and, optionally, ``id`` (the response's id, for the
client's own bookkeeping). The server keeps no record of its answers, so the prediction and the version travel
with the feedback: any replica of any version counts any item, whichever pod served the request. An id without
the prediction is therefore refused.

What is counted, per answering version (the metric label ``version`` of these series is the version in the
feedback, not necessarily the one this server runs):

* classification: ``kultivar_feedback_classifications_total{predicted, actual}``, one series per pair seen. The
  labels are bounded by the model's classes: a ``prediction`` outside them is refused (no version of this Model
  can have answered it), an ``actual`` outside them (a class the model never saw) is counted as ``__other__``,
  always a miss.
* regression: ``kultivar_feedback_regressions_total`` (labelled predictions) and, with error = prediction -
  actual, ``kultivar_feedback_overprediction_total`` (sum of positive errors), ``..._underprediction_total``
  (sum of the magnitudes of negative errors) and ``..._squared_error_total`` (sum of squared errors). MAE =
  (over + under) / n, RMSE = sqrt(squared / n), bias = (over - under) / n. Over and under are separate counters
  because a signed sum can fall, which Prometheus would read as a counter reset.

A batch is all or nothing: the first problem (not JSON, more than :data:`MAX_ITEMS` items, a missing or
mistyped field, a version that is not a Model version number, a prediction of no known class, a non-finite
number, more versions than :data:`MAX_VERSIONS`) is a 400 naming the item and the field, and nothing of that
batch is counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from kultivar.serving.payload import PayloadError, load_json

MAX_ITEMS = 10_000
MAX_VERSIONS = 16  # distinct answering versions one server counts (label cardinality; a pod sees a few)
MAX_ID_LENGTH = 256
OTHER_CLASS = "__other__"
_SHOW = 60


def class_key(value: Any) -> str:
    """A class as metric labels carry it: 1, 1.0 and "1" are one class (as the prediction counts label them)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW else text[:_SHOW - 3] + "..."


@dataclass
class FeedbackBatch:
    """One request's validated items, ready to be added to the counters in one go."""

    pairs: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (version, predicted, actual) -> count
    errors: dict[str, list[float]] = field(default_factory=dict)  # version -> [n, over, under, squared]
    count: int = 0
    other_actual: int = 0

    @property
    def versions(self) -> set[str]:
        return {v for v, _, _ in self.pairs} | set(self.errors)


def _version(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PayloadError(f"{where} must be the Model version number that answered (the response's "
                           f"model_version, e.g. 3), got {_show(value)}")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise PayloadError(f"{where} is {_show(value)}, not a Model version number (1, 2, ...): send the "
                           "model_version of the response")
    return str(int(text))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where} is {_show(value)}; the model is a regressor, so it takes a number")
    x = float(value)
    if not math.isfinite(x):
        raise PayloadError(f"{where} is {value!r}; send a finite number")
    return x


def _class(value: Any, where: str) -> str:
    if value is None or isinstance(value, list | dict) or (isinstance(value, float) and not math.isfinite(value)):
        raise PayloadError(f"{where} is {_show(value)}; the model is a classifier, so it takes a class (text or a "
                           "number as in the response's predict output)")
    return class_key(value)


def _add_error(batch: FeedbackBatch, version: str, error: float) -> None:
    sums = batch.errors.setdefault(version, [0.0, 0.0, 0.0, 0.0])
    sums[0] += 1
    if error > 0:
        sums[1] += error
    else:
        sums[2] -= error
    sums[3] += error * error


class FeedbackParser:
    """Validates feedback bodies for one model (its task and classes)."""

    def __init__(self, model: str, task: str, classes: Sequence[Any] | None, max_items: int = MAX_ITEMS) -> None:
        self.model, self.task, self.max_items = model, task, max_items
        self.classes = [class_key(c) for c in classes or ()]
        self.known = frozenset(self.classes)

    def parse(self, body: bytes, shadow: Callable[[str, str], tuple[str, Any] | None] | None = None
              ) -> FeedbackBatch:
        """shadow(id, version): the shadow version's answer to the same request (kultivar.serving.shadow), which
        the item's label then also counts for; None: no shadow."""
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise PayloadError("the feedback body must be a JSON object with an 'items' list, got "
                               f"{type(doc).__name__}")
        items = doc.get("items")
        if not isinstance(items, list) or not items:
            raise PayloadError("'items' must be a non-empty list of {prediction, version, actual} objects")
        if len(items) > self.max_items:
            raise PayloadError(f"the batch has {len(items)} items; send at most {self.max_items} per request")
        default = _version(doc["version"], "'version'") if doc.get("version") is not None else None
        batch = FeedbackBatch(count=len(items))
        regression = self.task == "regression"
        for i, item in enumerate(items):
            where = f"items[{i}]"
            if not isinstance(item, dict):
                raise PayloadError(f"{where} must be an object with prediction, version and actual, got "
                                   f"{type(item).__name__}")
            version = self._item_version(item, default, where)
            if "actual" not in item:
                raise PayloadError(f"{where} has no 'actual': send the true label (a "
                                   f"{'number' if regression else 'class'})")
            self._check_id(item, where)
            if "prediction" not in item:
                raise PayloadError(f"{where} has no 'prediction'. The server keeps no record of its answers (any "
                                   "replica takes any feedback), so send the prediction the response carried, with "
                                   "its model_version (and its id if you keep one)")
            shadowed = shadow(item["id"], version) if shadow is not None and isinstance(item.get("id"), str) \
                else None
            if regression:
                actual_value = _number(item["actual"], f"{where}.actual")
                _add_error(batch, version, _number(item["prediction"], f"{where}.prediction") - actual_value)
                if shadowed is not None and isinstance(shadowed[1], int | float) and math.isfinite(shadowed[1]):
                    _add_error(batch, shadowed[0], float(shadowed[1]) - actual_value)
                continue
            predicted = _class(item["prediction"], f"{where}.prediction")
            if predicted not in self.known:
                raise PayloadError(f"{where}.prediction {_show(item['prediction'])} is not a class of model "
                                   f"{self.model!r} ({', '.join(self.classes)}), so no version of it answered that")
            actual = _class(item["actual"], f"{where}.actual")
            if actual not in self.known:
                actual = OTHER_CLASS
                batch.other_actual += 1
            key = (version, predicted, actual)
            batch.pairs[key] = batch.pairs.get(key, 0) + 1
            if shadowed is not None and (theirs := class_key(shadowed[1])) in self.known:
                key = (shadowed[0], theirs, actual)
                batch.pairs[key] = batch.pairs.get(key, 0) + 1
        return batch

    @staticmethod
    def _item_version(item: dict[str, Any], default: str | None, where: str) -> str:
        raw = item.get("version")
        if raw is None:
            if default is None:
                raise PayloadError(f"{where} has no 'version': send the model_version of the response it is about "
                                   "(per item, or once for the batch as a top-level 'version')")
            return default
        return _version(raw, f"{where}.version")

    @staticmethod
    def _check_id(item: dict[str, Any], where: str) -> None:
        ident = item.get("id")
        if ident is not None and (not isinstance(ident, str) or len(ident) > MAX_ID_LENGTH):
            raise PayloadError(f"{where}.id must be text of at most {MAX_ID_LENGTH} characters (the response's id), "
                               f"got {_show(ident)}")


class FeedbackCounters(Collector):
    """Cumulative feedback counters per answering version, exported on scrape."""

    def __init__(self, task: str, names: Sequence[str], values: Sequence[str], version_position: int = 1) -> None:
        """names/values: the server's identity labels; the one at version_position is replaced per series by the
        version the feedback is about."""
        self.task = task
        self.names, self.values, self.at = list(names), list(values), version_position
        self.pairs: dict[tuple[str, str, str], int] = {}
        self.errors: dict[str, list[float]] = {}
        self.versions: set[str] = set()

    def check(self, batch: FeedbackBatch) -> None:
        """400 when counting the batch would take this server past :data:`MAX_VERSIONS` versions."""
        new = sorted(batch.versions - self.versions, key=int)
        if len(self.versions) + len(new) > MAX_VERSIONS:
            raise PayloadError(f"version {new[-1]} would be version number {len(self.versions) + len(new)} this "
                               f"server counts feedback for, above its limit of {MAX_VERSIONS} (already counted: "
                               f"{', '.join(sorted(self.versions, key=int))}); send feedback for the versions the "
                               "Deployment serves")

    def add(self, batch: FeedbackBatch) -> None:
        self.check(batch)
        self.versions |= batch.versions
        for key, count in batch.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0) + count
        for version, sums in batch.errors.items():
            total = self.errors.setdefault(version, [0.0, 0.0, 0.0, 0.0])
            for j, value in enumerate(sums):
                total[j] += value

    def _labels(self, version: str) -> list[str]:
        values = list(self.values)
        values[self.at] = version
        return values

    def collect(self) -> Iterator[Metric]:
        if self.task == "regression":
            yield from self._regression()
            return
        pairs = CounterMetricFamily(
            "kultivar_feedback_classifications",
            "Labelled predictions per (predicted, actual) class pair and answering version (feedback).",
            labels=[*self.names, "predicted", "actual"])
        for (version, predicted, actual), count in sorted(self.pairs.items()):
            pairs.add_metric([*self._labels(version), predicted, actual], count)
        yield pairs

    def _regression(self) -> Iterator[Metric]:
        families = [CounterMetricFamily(name, doc, labels=self.names) for name, doc in (
            ("kultivar_feedback_regressions", "Labelled regression predictions per answering version (feedback)."),
            ("kultivar_feedback_overprediction",
             "Sum of prediction - actual where positive, per answering version (feedback)."),
            ("kultivar_feedback_underprediction",
             "Sum of actual - prediction where positive, per answering version (feedback)."),
            ("kultivar_feedback_squared_error",
             "Sum of (prediction - actual)^2 per answering version (feedback)."),
        )]
        for version, sums in sorted(self.errors.items()):
            for family, value in zip(families, sums, strict=True):
                family.add_metric(self._labels(version), value)
        yield from families
