"""The four kinds: their models and how kubectl shows them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from kultivar.api.common import GROUP, VERSION
from kultivar.api.dataset import DatasetSpec, DatasetStatus
from kultivar.api.deployment import DeploymentSpec, DeploymentStatus
from kultivar.api.model import ModelSpec, ModelStatus
from kultivar.api.trainingrun import TrainingRunSpec, TrainingRunStatus

CATEGORY = "kultivar"
READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[Column, ...]
    # Child objects get names derived from ours (Jobs, apps Deployments, Services): keep room for suffixes.
    max_name_length: int = 63

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"


def _ready_columns() -> tuple[Column, ...]:
    return (
        Column("Ready", READY, description="Whether the object does its job now."),
        Column("Reason", REASON, description="Why it is (not) ready."),
    )


AGE = Column("Age", ".metadata.creationTimestamp", type="date")

DATASET = Kind(
    kind="Dataset",
    plural="datasets",
    short_names=("kds", "kdataset"),
    description="Dataset: where data lives, its schema and checks; validation fingerprints and profiles it.",
    spec=DatasetSpec,
    status=DatasetStatus,
    max_name_length=50,
    columns=(
        *_ready_columns(),
        Column("Rows", ".status.rows", type="integer", description="Rows in the latest valid version."),
        Column("Digest", ".status.digest", priority=1, description="Digest of the latest valid version."),
        Column("Source", ".spec.source.uri", priority=1, description="Where the data is read from."),
        AGE,
    ),
)

TRAINING_RUN = Kind(
    kind="TrainingRun",
    plural="trainingruns",
    short_names=("ktr", "ktrain"),
    description="TrainingRun: trains one model on one Dataset version in a Kubernetes Job.",
    spec=TrainingRunSpec,
    status=TrainingRunStatus,
    max_name_length=50,
    columns=(
        Column("Model", ".spec.modelRef.name", description="Model that receives the version."),
        Column("Dataset", ".spec.datasetRef.name", description="Dataset trained on."),
        *_ready_columns(),
        Column("Metric", ".status.metric", priority=1, description="Headline metric."),
        Column("Score", ".status.score", type="number", description="Headline metric on held-out data."),
        Column("Version", ".status.modelVersion", type="integer", description="Registered model version."),
        Column("Trigger", ".spec.trigger", priority=1, description="Why the run exists."),
        AGE,
    ),
)

MODEL = Kind(
    kind="Model",
    plural="models",
    short_names=("kmodel", "kmo"),
    description="Model: a registry of immutable numbered versions and the gate that picks production.",
    spec=ModelSpec,
    status=ModelStatus,
    max_name_length=50,
    columns=(
        Column("Production", ".status.productionVersion", type="integer", description="Production version."),
        Column("Latest", ".status.latestVersion", type="integer", description="Newest version."),
        *_ready_columns(),
        Column("Policy", ".spec.promotion.policy", priority=1, description="Promotion policy."),
        AGE,
    ),
)

DEPLOYMENT = Kind(
    kind="Deployment",
    plural="deployments",
    short_names=("kdeploy", "kdep"),
    description="Deployment: serves a Model version, rolls out canaries, A/B tests, and watches drift.",
    spec=DeploymentSpec,
    status=DeploymentStatus,
    max_name_length=40,
    columns=(
        Column("Model", ".spec.modelRef.name", description="Model served."),
        Column("Stable", ".status.stableVersion", type="integer", description="Version serving most traffic."),
        Column("Canary", ".status.canaryVersion", type="integer", description="Version in canary."),
        Column("Weight", ".status.canaryWeight", type="integer", description="Percent of traffic on the canary."),
        *_ready_columns(),
        Column("URL", ".status.url", priority=1, description="In-cluster URL."),
        Column("Drift", ".status.drift.driftedShare", type="number", priority=1, description="Drifted share."),
        AGE,
    ),
)

KINDS: tuple[Kind, ...] = (DATASET, TRAINING_RUN, MODEL, DEPLOYMENT)
BY_KIND = {k.kind: k for k in KINDS}
