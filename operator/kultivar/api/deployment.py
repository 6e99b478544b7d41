"""Deployment: serve a Model version, roll out new ones as canaries, A/B test, watch drift and live performance."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from kultivar.api.common import (
    CONDITIONS_FIELD,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Condition,
    Duration,
    DurationFloor,
    KModel,
    ObjectName,
    ResourceRequirements,
)

# As the Gateway API's own types, so that a route Kultivar cannot create is refused at apply time already.
GATEWAY_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ModelReference(KModel):
    """The Model to serve."""

    name: ObjectName = Field(description="Name of the Model in the same namespace.")
    version: int | None = Field(
        default=None, ge=1,
        description="Serve exactly this version. Unset follows the Model's production version.",
    )


class CanaryStep(KModel):
    """One step of a canary rollout."""

    weight: int = Field(ge=1, le=99, description="Percent of traffic the canary gets during this step.")
    pause: Duration = Field(default="1m", description="How long the step lasts before the next analysis decides.")


ANALYSIS_FLOOR = DurationFloor("1s", "the canary is analysed at most once a second")
WINDOW_FLOOR = DurationFloor("1s", "drift is judged on the inputs of a window of at least a second")
PERFORMANCE_WINDOW_FLOOR = DurationFloor("1s", "live performance is judged on the labels of a window of at least "
                                               "a second")
ACCURACY_LIKE = ("accuracy", "precision", "recall", "f1")
ERROR_METRICS = ("mae", "rmse")


class Analysis(KModel):
    """Checks run on the canary's own metrics before each step advances."""

    interval: Annotated[Duration, ANALYSIS_FLOOR.validator] = Field(
        default="30s",
        description="How often the canary is analysed (and, for an ABTest, how often the per-version numbers in "
                    "status are refreshed); at least 1s.",
        json_schema_extra=ANALYSIS_FLOOR.schema,
    )
    minRequests: int = Field(
        default=20, ge=0,
        description="Requests the canary must have served in a step to be judged; fewer is inconclusive (paused).",
    )
    maxErrorRate: float = Field(default=0.05, ge=0.0, le=1.0, description="Highest allowed share of failed requests.")
    maxLatencyP95Seconds: float = Field(default=0.5, gt=0.0, description="Highest allowed 95th percentile latency.")
    maxPredictionShift: float = Field(
        default=0.25, ge=0.0,
        description="Highest allowed PSI between the canary's and the stable version's prediction distributions. "
        "Only reported, not enforced, for a canary trained on other data than a stable whose inputs drifted "
        "(a drift retraining is expected to predict differently).",
    )
    metricsSource: Literal["pods", "prometheus"] = Field(
        default="pods",
        description="Where the Deployment's metrics come from, for the canary analysis, the ABTest numbers and drift "
                    "monitoring alike. pods: the operator scrapes the serving pods' /metrics and subtracts a "
                    "baseline it keeps in status. prometheus: it queries the Prometheus HTTP API at prometheusUrl "
                    "with increase() over the window (the step, the test, the drift window); Prometheus must "
                    "scrape the serving pods, whose series carry the labels kultivar_namespace and "
                    "kultivar_deployment.",
    )
    prometheusUrl: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://",
        description="Base URL of the Prometheus server (its HTTP API at /api/v1/query) when metricsSource is "
                    "prometheus, e.g. http://prometheus-operated.monitoring.svc:9090.",
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.metricsSource != 'prometheus' || has(self.prometheusUrl)",
         "message": "prometheusUrl is required when metricsSource is prometheus", "fieldPath": ".prometheusUrl"},
    ]})


class CanaryStrategy(KModel):
    """Weighted steps with automatic analysis, promotion and rollback."""

    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep(weight=10), CanaryStep(weight=50)],
        description="Traffic steps in increasing weight (at least one); after the last one the canary is promoted.",
        min_length=1,
        json_schema_extra={"maxItems": 20},
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Canary analysis.")
    paused: bool = Field(
        default=False,
        description="Hold a running canary at its current step: no analysis, no next step, no promotion until "
                    "set back to false (kubectl kultivar pause/resume). A canary already promoting finishes.",
    )

    # steps may be absent (the default applies; list defaults are not written into the schema): a canary block
    # with only analysis settings, as an ABTest's metrics source, must not fail with "no such key: steps".
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.steps) || self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight))",
         "message": "canary step weights must be distinct", "fieldPath": ".steps"},
        {"rule": "!has(self.steps) || self.steps.map(s, s.weight).isSorted()",
         "message": "canary step weights must increase", "fieldPath": ".steps"},
    ]})


class Variant(KModel):
    """A Model version that takes a fixed share of traffic in an A/B test."""

    version: int = Field(ge=1, description="Model version.")
    weight: int = Field(ge=0, le=100, description="Percent of traffic.")


AB_DECISION_NEEDS_TWO = "abTest.decision compares exactly two variants"


class ABTestDecision(KModel):
    """How an A/B test between two variants picks a winner from feedback labels (POST /v2/models/{name}/feedback):
    an always-valid sequential test (mSPRT), looked at every analysis interval. The winner is reported in
    status.abTest and the ABTestConcluded condition, never applied: making it production is a change to the spec."""

    metric: Literal["accuracy"] = Field(
        default="accuracy",
        description="The live metric compared: accuracy, the share of labelled predictions that were right (a "
                    "proportion, which the sequential test needs). Classifiers only.",
    )
    confidence: float = Field(
        default=0.95, ge=0.8, le=0.999,
        description="1 - alpha: the chance, however often the test is looked at, that no winner is declared "
                    "between two variants that are equally good. Changing it starts the test again.",
    )
    minSamples: int = Field(
        default=100, ge=10,
        description="Labelled predictions each variant needs before the test is computed (the normal "
                    "approximation needs them); before that the verdict is CollectingSamples.",
    )


class ABTestStrategy(KModel):
    """Fixed traffic split between versions, or header-based selection; with a decision, a winner from feedback."""

    variants: list[Variant] = Field(
        description="Versions and their traffic shares; weights add up to 100.",
        min_length=2,
        json_schema_extra={
            "maxItems": 10, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"],
        },
    )
    header: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9-]+$",
        description="Request header whose value names a version (e.g. x-model-version: 3) to select it explicitly.",
    )
    decision: ABTestDecision | None = Field(
        default=None,
        description="Decide a winner from live feedback labels (exactly two variants); unset: the test only "
                    "reports each variant's requests, errors and latency.",
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.variants.map(v, v.weight).sum() == 100",
         "message": "abTest variant weights must add up to 100", "fieldPath": ".variants"},
        {"rule": "!has(self.decision) || size(self.variants) == 2",
         "message": AB_DECISION_NEEDS_TWO, "fieldPath": ".decision"},
    ]})

    @model_validator(mode="after")
    def _decision_of_two(self) -> ABTestStrategy:
        if self.decision is not None and len(self.variants) != 2:
            raise ValueError(f"decision: {AB_DECISION_NEEDS_TWO}")
        return self


SHADOW_NOT_AB = ("strategy.shadow runs beside a Canary or Immediate strategy; an ABTest already sends users to "
                 "every variant")
SHADOW_NOT_AB_RULE = "!has(self.shadow) || !has(self.type) || self.type != 'ABTest'"


class ShadowStrategy(KModel):
    """A candidate version that gets a copy of live requests and never answers users."""

    version: int = Field(ge=1, description="Model version that receives the copies. It must not be a version "
                                           "that answers users (the stable, the canary); while it is one, the "
                                           "shadow waits (status.shadow says so).")
    percent: int = Field(default=100, ge=1, le=100,
                         description="Percent of the stable version's requests copied to it. router gatewayAPI: "
                                     "the HTTPRoute's RequestMirror percent; router replicas: the share the stable "
                                     "servers forward, fire-and-forget (a full queue drops copies, counted).")


class Strategy(KModel):
    """How new versions reach traffic."""

    type: Literal["Canary", "ABTest", "Immediate"] = Field(
        default="Canary",
        description="Canary: weighted steps with analysis; ABTest: fixed split; Immediate: replace at once.",
    )
    canary: CanaryStrategy = Field(default_factory=CanaryStrategy, description="Canary settings.")
    abTest: ABTestStrategy | None = Field(default=None, description="A/B test settings (type ABTest).")
    shadow: ShadowStrategy | None = Field(
        default=None, description="Shadow traffic beside a Canary or Immediate strategy: a copy of live requests "
                                  "goes to this version, whose answers are only compared (status.shadow).")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.type != 'ABTest' || has(self.abTest)",
         "message": "strategy.abTest is required when type is ABTest", "fieldPath": ".abTest"},
        {"rule": SHADOW_NOT_AB_RULE, "message": SHADOW_NOT_AB, "fieldPath": ".shadow"},
    ]})

    @model_validator(mode="after")
    def _shadow_beside_one_answer(self) -> Strategy:
        if self.shadow is not None and self.type == "ABTest":
            raise ValueError(f"shadow: {SHADOW_NOT_AB}")
        return self


class ParentReference(KModel):
    """A Gateway API Gateway (listener) to attach the HTTPRoute to."""

    name: ObjectName = Field(description="Gateway name.")
    namespace: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_LABEL,
                                  description="Gateway namespace; unset is the Deployment's.")
    sectionName: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
                                    description="Listener name on the Gateway.")


class GatewayTraffic(KModel):
    """Gateway API routing settings."""

    parentRefs: list[ParentReference] = Field(min_length=1, description="Gateways the HTTPRoute attaches to.",
                                              json_schema_extra={"maxItems": 8})
    hostnames: list[Annotated[str, Field(min_length=1, max_length=253, pattern=GATEWAY_HOSTNAME)]] = Field(
        default_factory=list, description="Hostnames the route matches (lower case; a leading *. is a wildcard).",
        json_schema_extra={"maxItems": 16})


class Traffic(KModel):
    """How traffic is split between versions."""

    router: Literal["replicas", "gatewayAPI"] = Field(
        default="replicas",
        description="replicas: weights approximated by replica counts behind one Service (any cluster); "
                    "gatewayAPI: exact weights through an HTTPRoute.",
    )
    gateway: GatewayTraffic | None = Field(default=None, description="Gateway API settings (router gatewayAPI).")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.router != 'gatewayAPI' || has(self.gateway)",
         "message": "traffic.gateway is required when router is gatewayAPI", "fieldPath": ".gateway"},
    ]})


RETRAIN_NEEDS_RUNS = "must be at least 1 when retrain is enabled; set enabled: false to turn retraining off"


class Retrain(KModel):
    """Retraining when drift persists or live performance is below its floor."""

    enabled: bool = Field(default=True, description="Create a TrainingRun when drift stays past the threshold, or "
                                                     "when live performance is below monitoring.performance.floor.")
    cooldown: Duration = Field(default="1h", description="Minimum time between two retraining runs Kultivar "
                                                          "starts (drift and performance alike).")
    maxRunsPerDay: int = Field(
        default=3, ge=0, le=100,
        description="At most this many drift or performance runs per 24 hours, together; at least 1 while enabled "
                    "(0 would never retrain: set enabled: false instead).",
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.enabled) && !self.enabled) || !has(self.maxRunsPerDay) || self.maxRunsPerDay >= 1",
         "message": RETRAIN_NEEDS_RUNS, "fieldPath": ".maxRunsPerDay"},
    ]})

    @model_validator(mode="after")
    def _enabled_can_run(self) -> Retrain:
        if self.enabled and self.maxRunsPerDay < 1:
            raise ValueError(f"maxRunsPerDay: {RETRAIN_NEEDS_RUNS}")
        return self


FLOOR_IN_RANGE = "floor must be between 0 and 1 for accuracy, precision, recall and f1"


class Performance(KModel):
    """Live performance of the served versions, from ground truth sent to the servers' feedback endpoint
    (POST /v2/models/{name}/feedback)."""

    metric: Literal["accuracy", "precision", "recall", "f1", "mae", "rmse"] = Field(
        description="The live metric: accuracy, precision, recall or f1 (macro averages) for classifiers, from the "
                    "(predicted, actual) pairs of the feedback; mae or rmse for regressors, from its error sums.",
    )
    floor: float = Field(
        ge=0.0,
        description="The worst acceptable value. accuracy, precision, recall, f1: the live value must stay at or "
                    "above it (0..1). mae, rmse (errors, lower is better): at or below it. Beyond it the Deployment "
                    "gets Underperforming=True and, with retrain enabled, a retraining run (trigger performance).",
    )
    minLabels: int = Field(
        default=100, ge=1,
        description="Labelled predictions a version needs in the window to be judged; with fewer its value is "
                    "reported but not judged.",
    )
    window: Annotated[Duration, PERFORMANCE_WINDOW_FLOOR.validator] = Field(
        default="1h", description="Window over which feedback is counted; at least 1s. Labels count in the window "
                                  "they arrive in, whenever the prediction was made.",
        json_schema_extra=PERFORMANCE_WINDOW_FLOOR.schema,
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!(self.metric in ['accuracy', 'precision', 'recall', 'f1']) || self.floor <= 1.0",
         "message": FLOOR_IN_RANGE, "fieldPath": ".floor"},
    ]})

    @model_validator(mode="after")
    def _floor_in_range(self) -> Performance:
        if self.metric in ACCURACY_LIKE and self.floor > 1.0:
            raise ValueError(f"floor: {FLOOR_IN_RANGE}")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ACCURACY_LIKE


class Monitoring(KModel):
    """Drift of live inputs against the training profile, and live performance from feedback."""

    enabled: bool = Field(default=True, description="Watch input drift.")
    threshold: float = Field(default=0.2, gt=0.0, description="PSI above which a feature counts as drifted.")
    driftedShare: float = Field(
        default=0.3, gt=0.0, le=1.0, description="Share of drifted features that makes the model drifted."
    )
    minSamples: int = Field(default=200, ge=1, description="Requests needed in the window before judging drift.")
    window: Annotated[Duration, WINDOW_FLOOR.validator] = Field(
        default="10m", description="Window over which live inputs are compared; at least 1s.",
        json_schema_extra=WINDOW_FLOOR.schema,
    )
    maxUnseenShare: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Share of a categorical or boolean feature's live values outside the training data's categories "
                    "above which the model is drifted, whatever the PSI (reported in status.drift.unseenCategories).",
    )
    performance: Performance | None = Field(
        default=None, description="Live performance from feedback labels; unset: not watched. Independent of "
                                  "enabled (which is about drift).")
    retrain: Retrain = Field(default_factory=Retrain, description="Retraining on drift or low live performance.")


class Serving(KModel):
    """How the model servers treat the requests they are sent."""

    unknownCategories: Literal["Accept", "Refuse"] = Field(
        default="Accept",
        description="What the server does with a categorical value outside the allowed values the Dataset declared "
                    "for that feature (spec.schema.features[].allowed, recorded in the model manifest). Accept: the "
                    "model answers (the value encodes as no known category) and the value counts as unseen in "
                    "status.drift.unseenCategories. Refuse: the request gets a 400 naming the feature and the value, "
                    "and the model never sees it. Features without allowed values are never refused. A model "
                    "version none of whose features records allowed values (none declared, or trained before "
                    "Kultivar recorded them) is not served with Refuse: its server stops with the reason "
                    "NoAllowedValues in its termination message.",
    )


MIN_ABOVE_MAX = "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
NO_TARGET = ("autoscaling needs a target: set targetCPUUtilizationPercentage, targetRequestsPerSecond or both")
CPU_TARGET_NEEDS_REQUEST = ("autoscaling.targetCPUUtilizationPercentage is a percentage of the pods' CPU request: "
                            "set resources.requests.cpu")
RPS_METRIC = "kultivar_requests_per_second"


class Autoscaling(KModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) per served version, sized between minReplicas and maxReplicas.

    The operator then no longer writes the replicas of the versions' apps/v1 Deployments: the autoscaler does.
    A canary on the replicas router keeps its traffic share by having its autoscaler pinned to its share of the
    stable version's current count (see the README, Autoscaling)."""

    minReplicas: int = Field(default=1, ge=1, le=1000, description="Fewest serving pods per version (at least 1).")
    maxReplicas: int = Field(ge=1, le=1000, description="Most serving pods per version.")
    targetCPUUtilizationPercentage: int | None = Field(
        default=None, ge=1, le=1000,
        description="Average CPU use of a version's pods to aim for, in percent of their CPU request "
                    "(resources.requests.cpu is then required). Served by the cluster's metrics.k8s.io API "
                    "(metrics-server).",
    )
    targetRequestsPerSecond: float | None = Field(
        default=None, gt=0.0, le=1e6,
        description="Average requests per second per pod to aim for, read as the Pods metric "
                    "requestsPerSecondMetric from the custom.metrics.k8s.io API (e.g. prometheus-adapter computing "
                    "rate(kultivar_inference_requests_total[1m]) per pod from the servers' own metrics).",
    )
    requestsPerSecondMetric: str = Field(
        default=RPS_METRIC, min_length=1, max_length=253, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:.-]*$",
        description="Name of the per-pod requests-per-second metric in the custom metrics API "
                    "(targetRequestsPerSecond).",
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
         "message": MIN_ABOVE_MAX, "fieldPath": ".minReplicas"},
        {"rule": "has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond)",
         "message": NO_TARGET},
    ]})

    @model_validator(mode="after")
    def _bounds_and_target(self) -> Autoscaling:
        if self.minReplicas > self.maxReplicas:
            raise ValueError(f"minReplicas: {MIN_ABOVE_MAX}")
        if self.targetCPUUtilizationPercentage is None and self.targetRequestsPerSecond is None:
            raise ValueError(NO_TARGET)
        return self

    def clamp(self, replicas: int) -> int:
        return min(self.maxReplicas, max(self.minReplicas, replicas))


class DeploymentSpec(KModel):
    """Desired state of a Kultivar Deployment."""

    modelRef: ModelReference = Field(description="The Model to serve.")
    replicas: int = Field(
        default=1, ge=0, le=100,
        description="Serving pods of the stable version. With autoscaling: the count the first version starts with "
                    "(within minReplicas..maxReplicas); after that its HorizontalPodAutoscaler decides.")
    resources: ResourceRequirements | None = Field(default=None, description="Resources of each serving pod.")
    image: str | None = Field(default=None, max_length=512,
                              description="Runtime image; unset uses the operator's configured runtime image.")
    strategy: Strategy = Field(default_factory=Strategy, description="Rollout strategy.")
    traffic: Traffic = Field(default_factory=Traffic, description="Traffic routing.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Drift monitoring and retraining.")
    serving: Serving = Field(default_factory=Serving, description="How the model servers treat requests.")
    autoscaling: Autoscaling | None = Field(
        default=None, description="Scale each served version with a HorizontalPodAutoscaler; unset: spec.replicas "
                                  "pods, written by the operator.")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.autoscaling) || !has(self.autoscaling.targetCPUUtilizationPercentage) || "
                 "(has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)",
         "message": CPU_TARGET_NEEDS_REQUEST, "fieldPath": ".autoscaling.targetCPUUtilizationPercentage"},
    ]})

    @model_validator(mode="after")
    def _cpu_target_has_request(self) -> DeploymentSpec:
        if self.autoscaling and self.autoscaling.targetCPUUtilizationPercentage is not None and \
                "cpu" not in ((self.resources.requests or {}) if self.resources else {}):
            raise ValueError(CPU_TARGET_NEEDS_REQUEST)
        return self


class HeaderMatch(KModel):
    """A request header value that routes a request to one version."""

    name: str = Field(description="Header name (strategy.abTest.header).")
    value: str = Field(description="Header value that selects the version.")


class VariantStatus(KModel):
    """A served version, its share of traffic and, while a canary or an A/B test runs, its measured numbers."""

    version: int = Field(description="Model version.")
    role: Literal["stable", "canary", "variant"] = Field(description="Role of this version.")
    weight: int = Field(description="Percent of traffic routed to it.")
    header: HeaderMatch | None = Field(
        default=None, description="The request header that selects this version explicitly (ABTest with a header).")
    replicas: int = Field(default=0, description="Desired serving pods.")
    readyReplicas: int = Field(default=0, description="Ready serving pods.")
    requests: int | None = Field(
        default=None, description="Requests it served in the measured window: the current canary step at the last "
                                  "analysis, or since the A/B test began (status.abTest).")
    errorRate: float | None = Field(default=None, description="Share of those requests that failed (500, 503).")
    latencyP95Seconds: float | None = Field(default=None, description="95th percentile latency of those requests.")
    backend: Literal["onnx", "sklearn"] | None = Field(
        default=None, description="What runs the model in its pods, as a ready pod reports it: onnx (the compiled "
                                  "model) or sklearn (the skops file).")
    backendNote: str | None = Field(
        default=None, max_length=1024,
        description="Why a compiled model recorded for the version is not run (Event CompiledModelRejected).")


class AnalysisResult(KModel):
    """The last canary analysis."""

    time: str = Field(description="When it ran.", json_schema_extra={"format": "date-time"})
    verdict: Literal["Pass", "Fail", "Inconclusive"] = Field(description="Outcome of the analysis.")
    failedCheck: str | None = Field(default=None, description="The check that failed, if any; ServerFailed: the "
                                                              "canary's model server refused to start for good "
                                                              "(its reason and message in message).")
    message: str = Field(default="", description="The numbers that decided it.")
    requests: int | None = Field(default=None, description="Canary requests in the step.")
    errorRate: float | None = Field(default=None, description="Canary error rate.")
    latencyP95Seconds: float | None = Field(default=None, description="Canary 95th percentile latency.")
    predictionShift: float | None = Field(default=None, description="PSI of canary vs stable predictions.")
    metricsSource: Literal["pods", "prometheus"] | None = Field(
        default=None, description="Where the numbers came from (spec.strategy.canary.analysis.metricsSource).")


class Rollout(KModel):
    """Progress of the current canary; kept in status so every decision survives a restart."""

    version: int = Field(description="The canary version.")
    step: int = Field(ge=0, description="Index of the current step.")
    stepStartedAt: str = Field(description="When the current step began.", json_schema_extra={"format": "date-time"})
    state: Literal["Starting", "Stepping", "Promoting", "RolledBack"] = Field(description="Rollout state.")
    baseline: str | None = Field(default=None, description="Metrics snapshot at the start of the step (JSON; "
                                                           "metrics source pods only).")


class ABTestVariantOutcome(KModel):
    """One variant's live metric since the A/B test began."""

    version: int = Field(description="Model version (the one that answered the labelled predictions).")
    value: float | None = Field(default=None, description="The live metric; unset without labels.")
    labels: int = Field(default=0, description="Labelled predictions since the test began: the sample size.")


class ABTestResult(KModel):
    """The A/B test's decision at the last analysis (spec.strategy.abTest.decision)."""

    metric: str = Field(description="The live metric compared.")
    confidence: float = Field(description="1 - alpha of the test.")
    method: str = Field(description="The sequential test.")
    verdict: Literal["CollectingSamples", "NoWinnerYet", "Concluded", "Unmeasurable"] = Field(
        description="CollectingSamples: a variant has fewer than minSamples labels; NoWinnerYet: tested, not "
                    "significant; Concluded: a winner is significant (final); Unmeasurable: the feedback cannot "
                    "give the metric (see message).")
    variants: list[ABTestVariantOutcome] = Field(default_factory=list, description="Per variant: the live metric "
                                                                                   "and its sample size.",
                                                 json_schema_extra={"maxItems": 2})
    pValue: float | None = Field(default=None, description="Always-valid p-value of 'the variants are equally "
                                                           "good' (non-increasing across looks).")
    looks: int = Field(default=0, description="Analyses that computed the test so far.")
    winner: int | None = Field(default=None, description="The version that is significantly better (Concluded).")
    effectSize: float | None = Field(default=None, description="The winner's metric minus the other's when it "
                                                               "concluded (first variant minus second before).")
    effectLow: float | None = Field(default=None, description="Lower end of the confidence sequence of that "
                                                              "difference.")
    effectHigh: float | None = Field(default=None, description="Upper end of the confidence sequence of that "
                                                               "difference.")
    concludedAt: str | None = Field(default=None, description="When the winner became significant.",
                                    json_schema_extra={"format": "date-time"})
    message: str = Field(default="", description="The numbers that decided it.")
    sequential: str | None = Field(default=None, description="The test's running state between looks (JSON).")


class ABTestStatus(KModel):
    """The running A/B test: the window that the per-version numbers in status.variants cover."""

    versions: list[int] = Field(description="The variants' versions; another set of versions starts a new window.",
                                json_schema_extra={"maxItems": 10})
    startedAt: str = Field(description="When the window began.", json_schema_extra={"format": "date-time"})
    measuredAt: str | None = Field(default=None, description="When the numbers were last measured.",
                                   json_schema_extra={"format": "date-time"})
    metricsSource: Literal["pods", "prometheus"] | None = Field(
        default=None, description="Where the numbers came from (spec.strategy.canary.analysis.metricsSource).")
    baseline: str | None = Field(default=None, description="Metrics snapshot at the window's start (JSON; metrics "
                                                           "source pods only).")
    result: ABTestResult | None = Field(default=None, description="The decision from feedback labels "
                                                                  "(spec.strategy.abTest.decision).")


class ShadowStatus(KModel):
    """The shadow version's numbers since its window began (spec.strategy.shadow)."""

    version: int = Field(description="The shadow version.")
    percent: int = Field(description="Percent of the stable version's requests copied to it.")
    stableVersion: int | None = Field(default=None, description="The version whose requests are copied.")
    state: Literal["Starting", "Running", "Waiting", "Failed"] = Field(
        description="Starting: its pods are coming up; Running: it receives copies; Waiting: it answers users "
                    "now (it is the stable or the canary), so nothing is copied to it (see message); Failed: its "
                    "model server refused to start for good (the server's reason and message in message), so "
                    "nothing is copied to it and the stable version serves on.")
    message: str = Field(default="", description="The numbers, or why nothing is copied.")
    router: Literal["replicas", "gatewayAPI"] | None = Field(
        default=None, description="How copies reach it: forwarded by the stable servers (replicas), or the "
                                  "HTTPRoute's RequestMirror filter (gatewayAPI).")
    startedAt: str = Field(description="When the window began (a new shadow version, stable version or metrics "
                                       "source starts a new one).", json_schema_extra={"format": "date-time"})
    measuredAt: str | None = Field(default=None, description="When the numbers were last measured.",
                                   json_schema_extra={"format": "date-time"})
    metricsSource: Literal["pods", "prometheus"] | None = Field(
        default=None, description="Where the numbers came from (spec.strategy.canary.analysis.metricsSource).")
    requests: int | None = Field(default=None, description="Copies the shadow served in the window (its own "
                                                           "counter).")
    errorRate: float | None = Field(default=None, description="Share of those that failed (500, 503).")
    latencyP95Seconds: float | None = Field(default=None, description="The shadow's 95th percentile latency.")
    compared: int | None = Field(
        default=None, description="Predicted rows whose shadow answer the stable servers compared with their own "
                                  "(router replicas; the mirror of router gatewayAPI discards the shadow's "
                                  "answers, so nothing is compared there).")
    agreement: float | None = Field(default=None, description="Share of compared rows where the shadow predicted "
                                                              "the same class (classifiers).")
    meanAbsDifference: float | None = Field(default=None, description="Mean absolute difference between the "
                                                                      "shadow's and the stable's predicted values "
                                                                      "(regressors).")
    forwardErrors: int | None = Field(default=None, description="Copies the shadow did not answer (error, "
                                                                "timeout, unreachable; router replicas).")
    dropped: int | None = Field(default=None, description="Copies dropped because the forwarding queue was full "
                                                          "(router replicas): users are never slowed down.")
    predictionShift: float | None = Field(default=None, description="PSI between the shadow's and the stable's "
                                                                    "prediction distributions in the window (both "
                                                                    "routers).")
    liveMetric: str | None = Field(default=None, description="spec.monitoring.performance.metric, when set.")
    liveValue: float | None = Field(default=None, description="The shadow's live metric from the feedback labels "
                                                              "counted for it in the window (unset without "
                                                              "labels).")
    labels: int | None = Field(default=None, description="Labelled shadow predictions in the window.")
    stableLiveValue: float | None = Field(default=None, description="The stable version's live metric in the same "
                                                                    "window, for comparison.")
    baseline: str | None = Field(default=None, description="Metrics snapshot at the window's start (JSON; metrics "
                                                           "source pods only).")


class FeatureDrift(KModel):
    """Drift score of one feature."""

    feature: str = Field(description="Feature name.")
    psi: float = Field(description="Population stability index against the training profile.")


class UnseenCategories(KModel):
    """How many of one feature's live values had a category the training data did not have."""

    feature: str = Field(description="Feature name.")
    share: float = Field(description="Share of the feature's non-missing values in the window with an unseen "
                                     "category (beyond the training data's own share of folded rare categories).")


# Judged drift windows kept in status.drift.history: the newest 24 (four hours of the default 10m windows, a day of
# hourly ones). An entry with its 10 features is ~0.6 KiB with 20-character feature names, so the history adds ~15 KiB
# to the Deployment: small beside etcd's 1.5 MiB object limit, and cheap for every watcher that receives the object
# on each status write.
DRIFT_HISTORY_LIMIT = 24
DRIFT_HISTORY_FEATURES = 10


class DriftCheck(KModel):
    """One judged drift window: what the report draws as drift per feature over time."""

    time: str = Field(description="When the window was judged (RFC 3339).", json_schema_extra={"format": "date-time"})
    version: int = Field(description="The version whose inputs were checked.")
    samples: int = Field(default=0, description="Requests in the window.")
    drifted: bool = Field(default=False, description="Whether the model was considered drifted.")
    driftedShare: float | None = Field(default=None, description="Share of features past the threshold.")
    unseenShare: float | None = Field(
        default=None, description="The largest share of a feature's live values with a category unseen in training.")
    features: list[FeatureDrift] = Field(
        default_factory=list, max_length=DRIFT_HISTORY_FEATURES,
        description=f"PSI of the most drifted features (top {DRIFT_HISTORY_FEATURES}).")


class DriftStatus(KModel):
    """The last drift check, and the judged windows before it."""

    checkedAt: str = Field(description="When drift was last computed.", json_schema_extra={"format": "date-time"})
    version: int | None = Field(default=None, description="The version whose inputs were checked.")
    samples: int = Field(default=0, description="Requests in the window.")
    window: str | None = Field(default=None, description="The window the check covers.")
    driftedShare: float | None = Field(default=None, description="Share of features past the threshold.")
    drifted: bool = Field(default=False, description="Whether the model is considered drifted.")
    since: str | None = Field(default=None, description="When drift was first seen (continuous).",
                              json_schema_extra={"format": "date-time"})
    topFeatures: list[FeatureDrift] = Field(default_factory=list, description="Most drifted features (top 10).")
    unseenCategories: list[UnseenCategories] = Field(
        default_factory=list, description="Features whose live values had categories unseen in training (top 10).")
    windowStart: str | None = Field(default=None, description="When the current window began.",
                                    json_schema_extra={"format": "date-time"})
    baseline: str | None = Field(default=None, description="Input counts at the window's start (JSON; metrics "
                                                           "source pods only).")
    history: list[DriftCheck] = Field(
        default_factory=list, max_length=DRIFT_HISTORY_LIMIT,
        description=f"Judged drift windows of the served versions, oldest first; the newest {DRIFT_HISTORY_LIMIT} "
                    "are kept (windows with too few requests to judge are not recorded).")


class VersionPerformance(KModel):
    """One version's live metric over the last performance window."""

    version: int = Field(description="Model version (the one that answered the labelled predictions).")
    value: float | None = Field(default=None, description="The live metric; unset without labels.")
    labels: int = Field(default=0, description="Labelled predictions in the window: the sample size.")


class PerformanceStatus(KModel):
    """The last live performance check (spec.monitoring.performance)."""

    checkedAt: str = Field(description="When it was last computed.", json_schema_extra={"format": "date-time"})
    metric: str = Field(description="The live metric.")
    floor: float = Field(description="Its worst acceptable value.")
    window: str | None = Field(default=None, description="The window the check covers.")
    windowStart: str | None = Field(default=None, description="When the current window began.",
                                    json_schema_extra={"format": "date-time"})
    version: int | None = Field(default=None, description="The version judged against the floor (stable).")
    versions: list[VersionPerformance] = Field(default_factory=list, description="Per served version: the metric "
                                                                                 "and its sample size.",
                                               json_schema_extra={"maxItems": 16})
    belowFloor: bool = Field(default=False, description="Whether the judged version was below the floor.")
    since: str | None = Field(default=None, description="When it was first seen below the floor (continuous).",
                              json_schema_extra={"format": "date-time"})
    baseline: str | None = Field(default=None, description="Feedback counts at the window's start (JSON; metrics "
                                                           "source pods only).")


class RetrainStatus(KModel):
    """The last retraining Kultivar started (drift or performance)."""

    trainingRun: str = Field(description="Name of the TrainingRun created.")
    time: str = Field(description="When it was created.", json_schema_extra={"format": "date-time"})
    reason: str = Field(default="", description="Why it was created.")
    trigger: Literal["drift", "performance"] | None = Field(default=None, description="What started it.")
    recent: list[str] = Field(default_factory=list, description="Creation times of recent drift and performance "
                                                                "runs (RFC 3339): the daily cap counts them.")
    count: int = Field(default=0, description="Runs created so far; numbers the next run's name.")


class RetrainWait(KModel):
    """A drift retraining held until the Dataset has data the served version was not trained on."""

    version: int = Field(description="The served version whose drift asked for the retraining.")
    dataset: str = Field(description="The Dataset validated again before retraining.")
    productionDigest: str = Field(description="The Dataset version that served version was trained on.")
    requestedAt: str = Field(description="When the Dataset's refresh was requested.",
                             json_schema_extra={"format": "date-time"})
    skippedAt: str | None = Field(
        default=None, description="When the refreshed data turned out to be the same: no run was started, and the "
                                  "source is not validated again for this until the cooldown has passed or the "
                                  "Dataset has a new version.",
        json_schema_extra={"format": "date-time"})
    message: str = Field(default="", description="Why no run was started.")


class DeploymentStatus(KModel):
    """Observed state of a Kultivar Deployment."""

    observedGeneration: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = CONDITIONS_FIELD
    url: str | None = Field(default=None, description="In-cluster URL of the inference service.")
    stableVersion: int | None = Field(default=None, description="Version serving most traffic.")
    canaryVersion: int | None = Field(default=None, description="Version in canary, if a rollout is under way.")
    canaryWeight: int | None = Field(default=None, description="Percent of traffic on the canary.")
    canaryStep: int | None = Field(default=None, description="Current canary step (1-based).")
    variants: list[VariantStatus] = Field(default_factory=list, description="Served versions.")
    rollout: Rollout | None = Field(default=None, description="State of the current canary rollout.")
    rolledBack: list[int] | None = Field(
        default=None, description="Versions whose canary failed analysis or whose model server failed for good "
                                  "(lastAnalysis.failedCheck ServerFailed); they are not rolled out again."
    )
    lastAnalysis: AnalysisResult | None = Field(default=None, description="The last canary analysis.")
    abTest: ABTestStatus | None = Field(default=None, description="The running A/B test (strategy ABTest).")
    shadow: ShadowStatus | None = Field(default=None, description="Shadow traffic (spec.strategy.shadow).")
    drift: DriftStatus | None = Field(default=None, description="The last drift check.")
    performance: PerformanceStatus | None = Field(default=None, description="The last live performance check.")
    lastRetrain: RetrainStatus | None = Field(default=None, description="The last retraining Kultivar started.")
    retrainWait: RetrainWait | None = Field(
        default=None, description="A drift retraining waiting for the Dataset's refresh, or skipped because the "
                                  "refreshed data is the same as the served version's.")
