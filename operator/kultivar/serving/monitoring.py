"""Prometheus metrics of the inference server (``GET /metrics``).

=============================================================  =================================================
metric                                                         meaning
=============================================================  =================================================
``kultivar_inference_requests_total{model,version,outcome}``   requests by outcome: success, bad_request (400,
                                                               413), unavailable (503), error (500)
``kultivar_inference_latency_seconds{model,version}``          histogram: request received to response ready
``kultivar_inference_batch_rows{model,version}``               histogram: rows per ``predict`` call
``kultivar_predictions_total{model,version,class}``            classifiers: predicted rows per class
``kultivar_prediction_value{model,version}``                   regressors: histogram of predicted values, bucket
                                                               bounds from the target's training profile
``kultivar_feature_bucket_total{model,version,feature,bucket}``  input values per training-profile bucket
``kultivar_feature_reference_ratio{model,version,feature,bucket}``  the training profile's share of each bucket
``kultivar_model_ready{model,version}``                        1 once the test inference passed
``kultivar_model_info{model,version,digest}``                  always 1; the digest being served
``kultivar_model_backend{model,version,backend}``              1 for the backend running the model: ``onnx``
                                                               (the compiled model) or ``sklearn``
``kultivar_compiled_model_rejected{model,version}``             1 when the version's compiled model was refused
                                                               (see :mod:`.model`) and scikit-learn answers
``kultivar_inference_batches_total{model,version,backend}``    predict calls by the backend that answered them
                                                               (rows the compiled model cannot take, such as
                                                               empty-text categories, go to ``sklearn``)
``kultivar_feedback_requests_total{model,version,outcome}``    feedback requests by outcome (bad_request: the
                                                               whole batch was refused, nothing counted)
``kultivar_feedback_classifications_total``                    classifiers: labelled predictions per
``{model,version,predicted,actual}``                           (predicted, actual) pair; ``version`` is the
                                                               version that answered (from the feedback)
``kultivar_feedback_regressions_total{model,version}``         regressors: labelled predictions per answering
``kultivar_feedback_overprediction_total{model,version}``      version, and the sums of positive and negative
``kultivar_feedback_underprediction_total{model,version}``     errors (prediction - actual) and of squared
``kultivar_feedback_squared_error_total{model,version}``       errors (see :mod:`.feedback`)
=============================================================  =================================================

When the operator runs the server, every metric also carries ``kultivar_namespace`` and ``kultivar_deployment``
(the Kultivar Deployment, from ``KULTIVAR_NAMESPACE`` and ``KULTIVAR_DEPLOYMENT``): the labels by which the
operator's ``metricsSource: prometheus`` finds a Deployment's series in Prometheus, whatever its scrape config.
Without those variables (a server started by hand) the labels are left out. With several worker processes in a
pod (``KULTIVAR_SERVE_WORKERS``), ``/metrics`` carries every worker's samples, each with a ``worker`` label
(see :mod:`kultivar.serving.workers`): the pod's counts are their sums.

Feature buckets are the contract with the operator's drift computation (see :mod:`kultivar.domain.profile`):
a numeric feature's ``bucket`` is the bin index ``"0"`` .. ``"k-1"`` of the profile's edges (outer bins open, inner
bins ``[edges[i], edges[i+1])``); a categorical or boolean feature's ``bucket`` is the profile key, with unseen
categories in ``__other__``; missing values count in ``__missing__``. Every bucket is exported from the start
(at 0), so rates and PSI never meet an absent series.

Accounting is deferred and vectorised: predicted batches are kept (their input matrix and predictions, up to
``PENDING_ROWS`` rows) and counted together - one ``searchsorted`` + ``bincount`` per numeric feature into numpy
counters - when that many have gathered or when Prometheus scrapes, whichever comes first, so a scrape sees every
request answered before it. Counting and scraping both run on the event loop thread, so the counters need no lock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kultivar.domain.profile import OTHER, CategoricalProfile, NumericProfile, Profile, normalize_category
from kultivar.serving.feedback import FeedbackBatch, FeedbackCounters
from kultivar.serving.payload import FeatureSpec, Rows, concat

OUTCOMES = ("success", "bad_request", "unavailable", "error")
MISSING = "__missing__"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BACKENDS = ("onnx", "sklearn")
SMALL_BATCH = 64
FEW_ROWS = SMALL_BATCH // 8  # drift accounting counts batches up to this size value by value, without numpy
PENDING_ROWS = 1024  # predicted rows kept uncounted at most (see ServingMetrics.count_pending)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384)
DEFAULT_VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0)


class _NumericCounter:
    """Counts of one numeric feature per profile bin, plus missing (last slot)."""

    def __init__(self, profile: NumericProfile) -> None:
        self.inner = np.asarray(profile.edges, dtype=np.float64)[1:-1]
        self.inner_list = self.inner.tolist()
        self.labels = [str(i) for i in range(profile.bins)] + [MISSING]
        self.counts = np.zeros(len(self.labels), dtype=np.int64)  # from batches counted with numpy
        self.few = [0] * len(self.labels)  # from a few rows at a time (a list item is cheaper to bump than numpy's)
        kept = 1.0 - profile.missingFraction
        self.reference = [kept * p for p in profile.proportions] + [profile.missingFraction]

    def totals(self) -> list[int]:
        return [a + b for a, b in zip(self.counts.tolist(), self.few, strict=True)]

    def add(self, values: np.ndarray) -> None:
        if len(values) <= FEW_ROWS:
            self.add_few(values.tolist())
            return
        # Same rule as kultivar.domain.profile.bin_indices: only inner edges decide, so the outer bins are open.
        index = np.searchsorted(self.inner, values, side="right")
        index[np.isnan(values)] = len(self.labels) - 1
        self.counts += np.bincount(index, minlength=len(self.labels))

    def add_few(self, values: list[Any]) -> None:
        """A few values as Python floats (a lone client's batch): per-value bisection beats four numpy calls'
        fixed overhead, which would otherwise cost as much as the compiled model's prediction."""
        few, inner, missing = self.few, self.inner_list, len(self.labels) - 1
        for v in values:
            few[missing if v != v else bisect_right(inner, v)] += 1


class _CategoryCounter:
    """Counts of one categorical or boolean feature per profile key (``__other__`` included), plus missing."""

    def __init__(self, profile: CategoricalProfile, boolean_column: bool) -> None:
        keys = [k for k in profile.proportions if k != OTHER] + [OTHER]
        self.labels = [*keys, MISSING]
        kept = 1.0 - profile.missingFraction
        self.reference = [kept * profile.proportions.get(k, 0.0) for k in keys] + [profile.missingFraction]
        self.position = {k: i for i, k in enumerate(keys)}
        self.other, self.missing = self.position[OTHER], len(keys)
        self.boolean_column = boolean_column
        self.profile = profile
        self.counts = np.zeros(len(self.labels), dtype=np.int64)
        self.few = [0] * len(self.labels)  # as in _NumericCounter
        if boolean_column:  # the model gets booleans as 1.0/0.0: look the two keys up once
            self.true = self.position.get("true", self.other)
            self.false = self.position.get("false", self.other)

    def totals(self) -> list[int]:
        return [a + b for a, b in zip(self.counts.tolist(), self.few, strict=True)]

    def add(self, values: np.ndarray) -> None:
        if len(values) <= FEW_ROWS:  # a few rows: no numpy calls (see _NumericCounter.add_few)
            self.add_few(values.tolist())
            return
        if self.boolean_column:
            index = np.where(values == 1.0, self.true, self.false)
            index[np.isnan(values)] = self.missing
        else:
            get, other, boolean = self.position.get, self.other, self.profile.boolean
            # Columns hold str or NaN (float): a dict lookup per value; normalise only what is not text already.
            index = np.fromiter(
                (get(v, other) if type(v) is str else self._key(v, boolean) for v in values),
                dtype=np.int64, count=len(values))
        self.counts += np.bincount(index, minlength=len(self.labels))

    def add_few(self, values: list[Any]) -> None:
        few = self.few
        for v in values:
            few[self._small_key(v)] += 1

    def _small_key(self, v: Any) -> int:
        if self.boolean_column:
            return self.missing if v != v else self.true if v == 1.0 else self.false
        return self.position.get(v, self.other) if type(v) is str else self._key(v, self.profile.boolean)

    def _key(self, value: Any, boolean: bool) -> int:
        key = normalize_category(value, boolean)
        return self.missing if key is None else self.position.get(key, self.other)


class _Identity:
    """The labels every metric starts with: model, version and, when known, the Kultivar Deployment."""

    def __init__(self, model: str, version: str, deployment: tuple[str, str] | None = None) -> None:
        self.names = ["model", "version"]
        self.values = [model, version]
        if deployment:
            self.names += ["kultivar_namespace", "kultivar_deployment"]
            self.values += list(deployment)


class _FeatureBuckets(Collector):
    def __init__(self, identity: _Identity, features: Sequence[FeatureSpec], profile: Profile,
                 drain: Callable[[], None]) -> None:
        self.identity = identity
        self.drain = drain
        self.counters: list[tuple[int, str, _NumericCounter | _CategoryCounter]] = []
        for j, f in enumerate(features):
            ref = profile.features.get(f.name)
            if isinstance(ref, NumericProfile) and f.type == "numeric":
                self.counters.append((j, f.name, _NumericCounter(ref)))
            elif isinstance(ref, CategoricalProfile) and f.type != "numeric":
                self.counters.append((j, f.name, _CategoryCounter(ref, boolean_column=f.type == "boolean")))

    def add(self, rows: Rows) -> None:
        if rows.matrix is not None and rows.count <= FEW_ROWS:
            # A few rows of one numeric matrix (the usual lone request): its values by feature as Python floats in
            # one call, rather than a numpy view per feature.
            by_feature = rows.matrix.T.tolist()
            for j, _, counter in self.counters:
                counter.add_few(by_feature[j])
            return
        for j, _, counter in self.counters:
            counter.add(rows.columns[j])

    def collect(self) -> Iterator[Metric]:
        self.drain()
        family = CounterMetricFamily("kultivar_feature_bucket", "Input values per training-profile bucket.",
                                     labels=[*self.identity.names, "feature", "bucket"])
        # The training proportions of the same buckets: the operator computes drift from scrapes alone.
        reference = GaugeMetricFamily("kultivar_feature_reference_ratio",
                                      "Training-profile share of each input bucket (drift reference).",
                                      labels=[*self.identity.names, "feature", "bucket"])
        for _, name, counter in self.counters:
            for label, count, ratio in zip(counter.labels, counter.totals(), counter.reference, strict=True):
                family.add_metric([*self.identity.values, name, label], count)
                reference.add_metric([*self.identity.values, name, label], ratio)
        yield family
        yield reference


class _ClassCounts(Collector):
    def __init__(self, identity: _Identity, classes: Sequence[Any] | None, drain: Callable[[], None]) -> None:
        self.identity = identity
        self.drain = drain
        self.counts: dict[str, int] = {_label(c): 0 for c in classes or ()}
        # Each predicted value's label, worked out once (a model predicts its classes, all of one type).
        self._labels: dict[Any, str] = {}

    def add(self, predictions: np.ndarray) -> None:
        if len(predictions) <= SMALL_BATCH:
            # np.unique sorts and allocates: for the few rows of a micro-batch a dict update is several times faster.
            counts, labels = self.counts, self._labels
            for value in predictions.tolist():
                key = labels.get(value)
                if key is None:
                    key = _label(value)
                    if len(labels) < 4096:
                        labels[value] = key
                counts[key] = counts.get(key, 0) + 1
            return
        values, per_value = np.unique(predictions, return_counts=True)
        for value, count in zip(values.tolist(), per_value.tolist(), strict=True):
            key = _label(value)
            self.counts[key] = self.counts.get(key, 0) + count

    def collect(self) -> Iterator[Metric]:
        self.drain()
        family = CounterMetricFamily("kultivar_predictions", "Predicted rows per class.",
                                     labels=[*self.identity.names, "class"])
        for label, count in self.counts.items():
            family.add_metric([*self.identity.values, label], count)
        yield family


class _ValueHistogram(Collector):
    def __init__(self, identity: _Identity, bounds: Sequence[float], drain: Callable[[], None]) -> None:
        self.identity = identity
        self.drain = drain
        self.bounds = np.asarray(sorted(set(bounds)), dtype=np.float64)
        self.counts = np.zeros(self.bounds.size + 1, dtype=np.int64)  # last: above every bound (+Inf)
        self.total = 0.0

    def add(self, predictions: np.ndarray) -> None:
        values = np.asarray(predictions, dtype=np.float64)
        values = values[~np.isnan(values)]
        # Prometheus buckets are "le": the first bound >= the value.
        self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=self.counts.size)
        self.total += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        self.drain()
        cumulative = np.cumsum(self.counts).tolist()
        buckets = [(_bound(b), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        family = HistogramMetricFamily("kultivar_prediction_value", "Predicted values (regression).",
                                       labels=self.identity.names)
        family.add_metric(self.identity.values, buckets, self.total)
        yield family


class _Histogram:
    """A Prometheus histogram's counts as plain numbers: observed without a lock or a labels lookup (the server
    counts on the event loop thread, where scrapes read them too)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.le = [floatToGoString(b) for b in self.bounds]
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # "le": the first bound >= the value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = list(accumulate(self.counts))
        return [*zip(self.le, cumulative[:-1], strict=True), ("+Inf", cumulative[-1])]


class _RequestCounts(Collector):
    """Requests by outcome, their latency, rows per predict call and predict calls per backend: what every
    request and batch updates, so kept as plain counters rather than prometheus_client's locked ones."""

    def __init__(self, identity: _Identity) -> None:
        self.identity = identity
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.rows = _Histogram(BATCH_BUCKETS)
        self.batches = dict.fromkeys(BACKENDS, 0)

    def collect(self) -> Iterator[Metric]:
        names, values = self.identity.names, self.identity.values
        requests = CounterMetricFamily("kultivar_inference_requests", "Inference requests by outcome.",
                                       labels=[*names, "outcome"])
        for outcome, count in self.outcomes.items():
            requests.add_metric([*values, outcome], count)
        yield requests
        latency = HistogramMetricFamily("kultivar_inference_latency_seconds", "Inference request latency.",
                                        labels=names)
        latency.add_metric(values, self.latency.buckets(), self.latency.sum)
        yield latency
        rows = HistogramMetricFamily("kultivar_inference_batch_rows", "Rows per predict call.", labels=names)
        rows.add_metric(values, self.rows.buckets(), self.rows.sum)
        yield rows
        batches = CounterMetricFamily("kultivar_inference_batches", "Predict calls by the backend that answered "
                                      "them.", labels=[*names, "backend"])
        for backend, count in self.batches.items():
            batches.add_metric([*values, backend], count)
        yield batches


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bound(value: float) -> str:
    return repr(float(value))


class ServingMetrics:
    """The server's metrics in their own registry (several servers can live in one test process)."""

    def __init__(self, model: str, version: str, digest: str, registry: CollectorRegistry | None = None,
                 deployment: tuple[str, str] | None = None) -> None:
        """deployment: (namespace, name) of the Kultivar Deployment, exported as labels on every metric."""
        self.model, self.version = model, version
        self.identity = _Identity(model, version, deployment)
        self.registry = registry or CollectorRegistry()
        labels, values = self.identity.names, self.identity.values
        self._counts = _RequestCounts(self.identity)
        self.registry.register(self._counts)
        self._ready = Gauge("kultivar_model_ready", "1 once the model passed its test inference.", labels,
                            registry=self.registry).labels(*values)
        Gauge("kultivar_model_info", "The model being served.", [*labels, "digest"],
              registry=self.registry).labels(*values, digest).set(1)
        backend = Gauge("kultivar_model_backend", "1 for the backend running the model (onnx or sklearn).",
                        [*labels, "backend"], registry=self.registry)
        self._backend = {b: backend.labels(*values, b) for b in BACKENDS}
        self._rejected = Gauge("kultivar_compiled_model_rejected", "1 when the version's compiled model was refused "
                               "and scikit-learn answers instead.", labels, registry=self.registry).labels(*values)
        feedback = Counter("kultivar_feedback_requests", "Feedback requests by outcome (a refused batch counts "
                           "nothing).", [*labels, "outcome"], registry=self.registry)
        self._feedback_outcome = {o: feedback.labels(*values, o) for o in OUTCOMES}
        ProcessCollector(registry=self.registry)
        self.feedback: FeedbackCounters | None = None
        self._features: _FeatureBuckets | None = None
        self._classes: _ClassCounts | None = None
        self._values: _ValueHistogram | None = None
        # Batches predicted but not counted yet (see count_pending): inputs (a numeric matrix, else the Rows) and
        # predictions, and how many rows they hold.
        self._pending_rows: list[np.ndarray | Rows] = []
        self._pending_predictions: list[np.ndarray] = []
        self._pending_count = 0

    def bind_model(self, features: Sequence[FeatureSpec], task: str, classes: Sequence[Any] | None,
                   profile: Profile | None, drift_accounting: bool) -> None:
        """Register the model-specific metrics once the model (and so its features and profile) is known."""
        if task == "classification":
            self._classes = _ClassCounts(self.identity, classes, self.count_pending)
            self.registry.register(self._classes)
        else:
            target = profile.target if profile else None
            bounds = (np.asarray(target.edges[1:-1]) if isinstance(target, NumericProfile) and target.bins > 1
                      else np.asarray(DEFAULT_VALUE_BUCKETS))
            self._values = _ValueHistogram(self.identity, bounds.tolist(), self.count_pending)
            self.registry.register(self._values)
        if drift_accounting and profile is not None:
            self._features = _FeatureBuckets(self.identity, features, profile, self.count_pending)
            self.registry.register(self._features)
        self.feedback = FeedbackCounters(task, self.identity.names, self.identity.values)
        self.registry.register(self.feedback)

    def request(self, outcome: str, seconds: float) -> None:
        self._counts.outcomes[outcome] += 1
        self._counts.latency.observe(seconds)

    def feedback_request(self, outcome: str) -> None:
        self._feedback_outcome[outcome].inc()

    def count_feedback(self, batch: FeedbackBatch) -> None:
        """Add a validated batch (raises PayloadError, counting nothing, past the version limit)."""
        assert self.feedback is not None, "feedback is only taken once the model is bound"
        self.feedback.add(batch)

    def set_backend(self, backend: str, rejected: bool = False) -> None:
        for name, gauge in self._backend.items():
            gauge.set(1 if name == backend else 0)
        self._rejected.set(1 if rejected else 0)

    def batch(self, rows: Rows, predictions: np.ndarray, backend: str = "sklearn") -> None:
        """A predicted batch. Its predictions and inputs are counted later, many batches at once (see
        ``count_pending``): a scrape always sees every batch answered before it."""
        self._counts.rows.observe(rows.count)
        self._counts.batches[backend] += 1
        if self._classes is None and self._values is None:
            return  # no model bound yet: nothing to count them in
        # The numeric matrix alone when there is one (an array: no object for the collector to track).
        self._pending_rows.append(rows.matrix if rows.matrix is not None else rows)
        self._pending_predictions.append(predictions)
        self._pending_count += rows.count
        if self._pending_count >= PENDING_ROWS:
            self.count_pending()

    def count_pending(self) -> None:
        """Count the predictions and inputs of the batches answered since the last count.

        Counting a batch costs tens of microseconds of fixed numpy overhead (a search, a bincount and an add per
        feature), more than predicting a micro-batch with the compiled model; counting many batches in one go
        costs a fraction of a microsecond per row. Run on the event loop, like ``batch`` and the scrapes."""
        if not self._pending_predictions:
            return
        rows, predictions = self._pending_rows, self._pending_predictions
        self._pending_rows, self._pending_predictions, self._pending_count = [], [], 0
        labels = predictions[0] if len(predictions) == 1 else np.concatenate(predictions)
        if self._classes is not None:
            self._classes.add(labels)
        elif self._values is not None:
            self._values.add(labels)
        if self._features is not None:
            if all(type(r) is np.ndarray for r in rows):
                self._features.add(Rows.of_matrix(np.concatenate(rows)))  # type: ignore[arg-type]
            else:
                self._features.add(concat([r if isinstance(r, Rows) else Rows.of_matrix(r) for r in rows]))

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)  # the model's collectors count what is pending first
