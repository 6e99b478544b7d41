"""Label and annotation keys the operator puts on objects and selects by: one spelling for every module."""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kultivar"  # the value of MANAGED_BY on everything the operator creates
OWNER_KIND = "kultivar.io/owner-kind"  # on children: the kind of our object that owns them
OWNER_NAME = "kultivar.io/owner-name"
WORKLOAD = "kultivar.io/workload"  # on Jobs: validate-dataset, train, delete-artifacts
DEPLOYMENT_LABEL = "kultivar.io/deployment"  # on serving objects, and on the TrainingRuns drift started
SHADOW_LABEL = "kultivar.io/shadow-of"  # on a shadow version's pods instead of DEPLOYMENT_LABEL (never in its Service)
VERSION_LABEL = "kultivar.io/model-version"  # on a served version's objects
TRIGGER_LABEL = "kultivar.io/trigger"  # on TrainingRuns the operator started: why (drift)
RETRAINED_FROM_LABEL = "kultivar.io/retrained-from"  # on a drift run: the run behind the drifted version

GENERATION_ANNOTATION = "kultivar.io/generation"  # on Jobs: the owner's generation they were planned for
DATASET_DIGEST_ANNOTATION = "kultivar.io/dataset-digest"
REFRESH_ANNOTATION = "kultivar.io/refresh-requested"  # on a Dataset: validate again now (a timestamp)
