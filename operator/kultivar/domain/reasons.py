"""Condition reasons the operator decides: one vocabulary, with what each one means.

A reason is CamelCase (Kubernetes API conventions). `progress` marks a Ready=False reason that means "working
on it" rather than "something needs a fix", for the kinds listed: k8s/apply posts its transition as a Normal
Event (every other Ready=False reason as a Warning), and hack/manifests.py writes the `progressing` table of
each kind's Argo CD health check (charts/kultivar/argocd/<Kind>.lua) from it, so the two cannot disagree.

Failure reasons a workload pod reports in its result (DataValidationFailed, TrainingFailed, ...) are relayed
verbatim and are never progress.
"""

from __future__ import annotations

from enum import StrEnum

KINDS = ("Dataset", "TrainingRun", "Model", "Deployment")


class Reason(StrEnum):
    progress_for: tuple[str, ...]

    def __new__(cls, value: str, *progress_for: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.progress_for = progress_for
        return member

    # Work in progress (Ready=False, Normal Event; Argo CD Progressing).
    VALIDATING = "Validating", "Dataset"
    PENDING = "Pending", "TrainingRun"
    TRAINING = "Training", "TrainingRun"
    REGISTERING = "Registering", "TrainingRun"
    WAITING_FOR_DATASET = "WaitingForDataset", "TrainingRun"
    WAITING_FOR_HOLDOUT = "WaitingForHoldout", "TrainingRun"  # spec.evaluation.holdout is not validated yet
    DEPLOYING = "Deploying", "Deployment"
    REPLACING = "Replacing", "Deployment"  # the Immediate strategy: the new version's pods are starting
    CANARY_STARTING = "CanaryStarting", "Deployment"  # the canary's pods are coming up
    CANARY_STEPPING = "CanaryStepping", "Deployment"  # the canary takes a step's share of traffic
    CANARY_PAUSED = "CanaryPaused", "Deployment"  # an inconclusive analysis: measured again next interval
    CANARY_PROMOTING = "CanaryPromoting", "Deployment"  # the canary scales to the full size
    # Not progress: the user holds the canary (spec.strategy.canary.paused); Argo CD shows it Suspended.
    CANARY_PAUSED_BY_USER = "CanaryPausedByUser"

    # Done (Ready=True, or the state of other conditions).
    VALIDATED = "Validated"
    TRAINED = "Trained"
    REGISTERED = "Registered"
    PRODUCTION_SET = "ProductionSet"
    PRODUCTION_ROLLED_BACK = "ProductionRolledBack"  # Manual: the pinned version was rolled back
    SERVING = "Serving"
    STABLE = "Stable"  # Progressing=False: no rollout
    AS_EXPECTED = "AsExpected"  # Degraded=False
    AB_TEST_RUNNING = "ABTestRunning"
    MEASURING = "Measuring"  # Drifted=Unknown: a drift window is open
    NO_DRIFT = "NoDrift"
    DRIFT_DETECTED = "DriftDetected"
    AT_OR_ABOVE_FLOOR = "AtOrAboveFloor"  # Underperforming=False: live performance within its floor
    BELOW_FLOOR = "BelowFloor"  # Underperforming=True
    TOO_FEW_LABELS = "TooFewLabels"  # Underperforming=Unknown: not enough feedback in the window to judge
    WINNER_SIGNIFICANT = "WinnerSignificant"  # ABTestConcluded=True: the A/B test found a significant winner
    NO_WINNER_YET = "NoWinnerYet"  # ABTestConcluded=False: tested, no significant difference so far
    RETRAIN_SKIPPED = "RetrainSkipped"  # Drifted=True: the refreshed data is the data the served version knows

    # Something needs a fix, or a dependency (Ready=False, Warning Event; Argo CD Degraded).
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    DATASET_NOT_FOUND = "DatasetNotFound"
    DATASET_VERSION_NOT_FOUND = "DatasetVersionNotFound"
    MODEL_NOT_FOUND = "ModelNotFound"
    INVALID_SEGMENTS = "InvalidSegments"  # spec.evaluation.segments names no categorical feature of the Dataset
    HOLDOUT_NOT_FOUND = "HoldoutNotFound"
    HOLDOUT_MISMATCH = "HoldoutMismatch"  # the holdout Dataset has other columns
    VERSION_NOT_FOUND = "VersionNotFound"
    NO_PRODUCTION_VERSION = "NoProductionVersion"  # Argo CD: Progressing, Suspended or Degraded (Model.lua)
    ESTIMATOR_NOT_ALLOWED = "EstimatorNotAllowed"
    ESTIMATOR_IMPORT_FAILED = "EstimatorImportFailed"
    ARTIFACT_STORE_UNAVAILABLE = "ArtifactStoreUnavailable"
    HEADER_ROUTING_NEEDS_GATEWAY = "HeaderRoutingNeedsGateway"
    ROLLED_BACK = "RolledBack"  # Degraded=True
    GATEWAY_API_UNAVAILABLE = "GatewayAPIUnavailable"  # Degraded=True: the HTTPRoute cannot be written
    HTTPROUTE_FORBIDDEN = "HTTPRouteForbidden"
    HTTPROUTE_REJECTED = "HTTPRouteRejected"
    CHILD_REJECTED = "ChildRejected"  # the API server refused an object the spec makes us create
    SERVER_FAILED = "ServerFailed"  # a version's model server refused to start for good (its reason in the message)
    METRICS_UNAVAILABLE = "MetricsUnavailable"  # Drifted=Unknown
    NO_REFERENCE_PROFILE = "NoReferenceProfile"
    METRIC_MISMATCH = "MetricMismatch"  # Underperforming=Unknown: the feedback is of the other task
    NOT_WATCHED = "NotWatched"  # Underperforming=Unknown: spec.monitoring.performance was removed
    # Warning Event: a served version's compiled model (ONNX) was missing, had a digest other than the registry's,
    # or did not load; its verified skops file answers instead (status.variants[].backend: sklearn).
    COMPILED_MODEL_REJECTED = "CompiledModelRejected"


def is_progress(kind: str, reason: str) -> bool:
    """Whether Ready=False with this reason means work in progress for this kind."""
    member = Reason._value2member_map_.get(reason)
    return isinstance(member, Reason) and kind in member.progress_for


def progress_reasons(kind: str) -> list[Reason]:
    """The kind's work-in-progress reasons, in declaration order (the Argo CD table's order)."""
    return [r for r in Reason if kind in r.progress_for]
