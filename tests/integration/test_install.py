"""Install and operate: the Helm chart on the real control plane, RBAC proven, Pod Security, GitOps health.

helm (built from its Go module by hack/build-tools.sh) installs charts/kultivar into a namespace that
enforces Pod Security "restricted". The operator then runs with nothing but the chart ServiceAccount's
credentials (a token from the TokenRequest API) and completes the training path in a namespace that also
enforces "restricted": the chart's RBAC is sufficient, and every pod involved passes admission. The same
token is refused everything outside its role. The status objects the operator writes along the way go
through the chart's Argo CD health checks (Lua, run by lupa) and kstatus (Flux).

The session's admin-credentialed operator (the `operator` fixture) is stopped while this module runs, so
any progress can only come from the ServiceAccount-credentialed one.
"""

from __future__ import annotations

import contextlib
import copy
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kapi import PLURALS, create, get, path, sample, wait_reason
from kubernetes import client, config
from operator_process import OperatorProcess

from gitops import argocd_health, kstatus
from helpers import require_tool, wait_for
from kultivar.devcluster import iris_data
from kultivar.devcluster.dev import provision_store
from kultivar.devcluster.localkubelet import LocalKubelet
from kultivar.devcluster.paths import cache_root, find_versions_file, parse_versions_env
from kultivar.k8s.client import Api

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kultivar"
EXAMPLES = ROOT / "examples" / "iris"
SAMPLES = ROOT / "manifests" / "samples"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
TRAIN_TIMEOUT = 150
# kwok's node advertises no ephemeral-storage, so the chart's default requests of it could never schedule.
KWOK_VALUES = ["--set", "resources.requests.ephemeral-storage=null", "--set", "resources.limits.ephemeral-storage=null"]


def _helm_binary() -> Path:
    versions_file = find_versions_file()
    version = parse_versions_env(versions_file).get("HELM_VERSION") if versions_file else None
    return cache_root() / "helm" / str(version) / "bin" / "helm"


HELM = _helm_binary()


@pytest.fixture(autouse=True)
def _helm_built() -> None:
    require_tool(HELM, "helm (built by `make tools`)")


def helm(kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(HELM), "--kubeconfig", str(kube.kubeconfig), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str

    @property
    def fullname(self) -> str:  # the chart's kultivar.fullname: its ServiceAccount's and its Lease's name
        return self.service_account


@contextlib.contextmanager
def installed(kube, *values: str, prefix: str = "kvsys") -> Iterator[Release]:
    """helm install the chart (CRDs stay those the session applied) into a namespace enforcing "restricted"."""
    namespace = kube.new_namespace(RESTRICTED, prefix=prefix)
    name = f"kv{secrets.token_hex(3)}"
    try:
        helm(kube, "install", name, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
             "--set", "crds.install=false", *KWOK_VALUES, *values)
        yield Release(name, namespace, f"{name}-kultivar")
    finally:
        helm(kube, "uninstall", name, "--namespace", namespace, "--wait", "--timeout", "60s", check=False)
        kube.delete_namespace(namespace)


@pytest.fixture(scope="module", autouse=True)
def admin_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    operator.stop()
    yield
    operator.start()


@pytest.fixture(scope="module")
def release(kube) -> Iterator[Release]:
    """The chart with default values (cluster-wide)."""
    with installed(kube) as r:
        yield r


def token_kubeconfig(kube, release: Release, target: Path) -> Path:
    """A kubeconfig holding only a token the API server issued for the chart's ServiceAccount."""
    status, out = kube.raw(
        "POST", f"/api/v1/namespaces/{release.namespace}/serviceaccounts/{release.service_account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
    assert status == 201, out
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    target.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": out["status"]["token"]}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": user}}],
    }))
    return target


class ScopedOperator(OperatorProcess):
    """`kultivar operator [-n NS ...]` as the chart runs it, with the given kubeconfig."""

    def __init__(self, *args: Any, namespaces: tuple[str, ...] = (), peering: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.namespaces = namespaces
        self.peering = peering

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "kultivar.cli", "operator", "--log-level", "debug"]
        for ns in self.namespaces:
            cmd += ["--namespace", ns]
        if self.peering:
            cmd += ["--peering", self.peering]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)

    def forbidden_lines(self) -> list[str]:
        """RBAC refusals the operator or kopf met: the API server says `User "..." cannot <verb> resource`.

        (Other 403s are not about permissions, e.g. an Event for an object whose namespace is being deleted.)
        """
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        refused = re.compile(r'cannot [a-z]+ resource "')
        return [line for line in text.splitlines() if " DEBUG " not in line and refused.search(line)]


@contextlib.contextmanager
def operator_as(kube, release: Release, workdir: Path, store: Path, namespaces: tuple[str, ...] = (),
                peering: str = "") -> Iterator[ScopedOperator]:
    kubeconfig = token_kubeconfig(kube, release, workdir / "sa.kubeconfig")
    # The chart's Role lets it hold its Lease in the release namespace only (and apart from the session's operator).
    proc = ScopedOperator(kubeconfig, workdir, store, namespaces=namespaces, peering=peering,
                          extra_env={"KULTIVAR_LEASE_NAMESPACE": release.namespace,
                                     "KULTIVAR_LEASE_NAME": release.fullname})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def restricted_namespace(kube, store_dir: Path) -> Iterator[str]:
    """A workload namespace enforcing Pod Security "restricted", with the artifact store's claim."""
    name = kube.new_namespace(RESTRICTED)
    provision_store(Api(kube.api_client), name, store_dir)
    yield name
    kube.delete_namespace(name)
    kube.raw("DELETE", f"/api/v1/persistentvolumes/kultivar-artifacts-{name}")


# --- recording what the operator writes -----------------------------------------------------------------


@dataclass
class Recorder:
    """Every distinct state of every Kultivar object in a namespace seen while polling."""

    kube: Any
    namespace: str
    seen: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    def poll(self) -> None:
        for kind in PLURALS:
            status, out = self.kube.raw("GET", path(kind, self.namespace))
            assert status == 200, out
            for item in out["items"]:
                item["kind"] = kind
                st = item.get("status") or {}
                conds = tuple((c["type"], c["status"], c.get("reason")) for c in st.get("conditions") or [])
                key = (kind, item["metadata"]["name"], item["metadata"].get("generation"),
                       st.get("observedGeneration"), conds, st.get("latestVersion"))
                self.seen.setdefault(key, item)

    def wait_reason(self, kind: str, name: str, reason: str, timeout: float = TRAIN_TIMEOUT) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.poll()
            obj = get(self.kube, self.namespace, kind, name)
            ready = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
            return obj if ready and ready["reason"] == reason else None

        return wait_for(check, timeout=timeout, interval=0.1, message=f"{kind} {name} Ready reason {reason}")

    def states(self, kind: str, name: str) -> list[dict[str, Any]]:
        return [obj for key, obj in self.seen.items() if key[0] == kind and key[1] == name]


def ready_reason(obj: dict[str, Any]) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return c["reason"]
    return None


# What Argo CD must conclude for each Ready reason the operator writes (on the current generation).
EXPECTED_HEALTH = {
    ("Dataset", "Validating"): "Progressing",
    ("Dataset", "Validated"): "Healthy",
    ("Dataset", "DataValidationFailed"): "Degraded",
    ("TrainingRun", "WaitingForDataset"): "Progressing",
    ("TrainingRun", "Pending"): "Progressing",
    ("TrainingRun", "Training"): "Progressing",
    ("TrainingRun", "Registering"): "Progressing",
    ("TrainingRun", "Registered"): "Healthy",
    ("TrainingRun", "DatasetNotFound"): "Degraded",
    ("Model", "ProductionSet"): "Healthy",
    ("Deployment", "ModelNotFound"): "Degraded",
    ("Deployment", "Deploying"): "Progressing",
}


def _with(obj: dict[str, Any], reason: str) -> bool:
    return ready_reason(obj) == reason


# --- the tests ------------------------------------------------------------------------------------------


def test_chart_runs_under_pod_security_restricted(kube, release: Release) -> None:
    ns = release.namespace
    assert kube.core.read_namespace(ns).metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = kube.apps.read_namespaced_deployment(release.service_account, ns)
    assert deployment.status.available_replicas == 1  # its pod was admitted by Pod Security and runs
    # Rolling: only the leader-election Lease's holder reconciles, so old and new pods may overlap.
    assert deployment.spec.strategy.type == "RollingUpdate" and deployment.spec.replicas == 1
    pod = deployment.spec.template.spec
    assert pod.service_account_name == release.service_account and pod.security_context.run_as_non_root
    # The control: in the same namespace a pod that is not "restricted" is refused.
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}]}}
    status, out = kube.raw("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", bad)
    assert status == 403 and "violates PodSecurity" in out["message"], out
    # The metrics Service selects the operator pod.
    svc = kube.core.read_namespaced_service(f"{release.service_account}-metrics", ns)
    assert svc.spec.selector == deployment.spec.selector.match_labels


def test_training_path_with_only_the_chart_service_account(kube, release, restricted_namespace, store_dir,
                                                           tmp_path) -> None:
    ns = restricted_namespace
    rec = Recorder(kube, ns)
    with operator_as(kube, release, tmp_path, store_dir) as op, LocalKubelet(Api(kube.api_client), ns,
                                                                            tmp_path / "pods"):
        fresh = create(kube, ns, sample("Dataset"))
        assert argocd_health(fresh)["status"] == "Progressing"  # not reconciled yet
        create(kube, ns, sample("Model"))
        create(kube, ns, sample("TrainingRun"))
        bad = sample("Dataset")
        bad["metadata"]["name"] = "iris-bad"
        bad["spec"]["checks"]["minRows"] = 1000
        create(kube, ns, bad)
        orphan = sample("TrainingRun")
        orphan["metadata"]["name"] = "orphan"
        orphan["spec"]["datasetRef"]["name"] = "missing"
        create(kube, ns, orphan)
        lost = sample("Deployment")
        lost["metadata"]["name"] = "lost"
        lost["spec"]["modelRef"]["name"] = "missing"
        create(kube, ns, lost)

        rec.wait_reason("TrainingRun", "iris-logreg-1", "Registered")
        rec.wait_reason("Model", "iris", "ProductionSet", timeout=30)
        rec.wait_reason("Dataset", "iris-bad", "DataValidationFailed")
        rec.wait_reason("TrainingRun", "orphan", "DatasetNotFound", timeout=30)
        rec.wait_reason("Deployment", "lost", "ModelNotFound", timeout=30)

        # A spec change the operator has not observed yet is progress, then healthy again.
        status, changed = kube.raw_patch(path("Model", ns, "iris"), {"spec": {"description": "Iris, edited"}})
        assert status == 200 and changed["metadata"]["generation"] == 2, changed
        changed["kind"] = "Model"
        if (changed.get("status") or {}).get("observedGeneration") == 1:
            assert argocd_health(changed)["status"] == "Progressing" and kstatus(changed) == "InProgress"
        model = wait_for(lambda: (m := get(kube, ns, "Model", "iris"))["status"].get("observedGeneration") == 2 and m,
                         timeout=30, message="Model iris generation 2 observed")
        model["kind"] = "Model"
        assert argocd_health(model)["status"] == "Healthy" and kstatus(model) == "Current"

    # RBAC was sufficient: neither Kultivar nor kopf met a single refusal.
    assert not op.forbidden_lines(), "\n".join(op.forbidden_lines()[:20])

    # Argo CD's verdict on every state the operator wrote, and kstatus's on the same objects.
    checked = set()
    for obj in rec.seen.values():
        reason = ready_reason(obj)
        health = argocd_health(obj)
        expected = EXPECTED_HEALTH.get((obj["kind"], reason))
        if expected is None:
            continue
        assert health["status"] == expected, (obj["kind"], obj["metadata"]["name"], reason, health)
        assert reason in health["message"]
        assert kstatus(obj) == ("Current" if expected == "Healthy" else "InProgress"), (obj["kind"], reason)
        checked.add((obj["kind"], reason))
    must = {("Dataset", "Validated"), ("Dataset", "DataValidationFailed"), ("TrainingRun", "WaitingForDataset"),
            ("TrainingRun", "Registered"), ("TrainingRun", "DatasetNotFound"), ("Model", "ProductionSet"),
            ("Deployment", "ModelNotFound")}
    assert must <= checked, f"not seen: {must - checked}"
    # A Model before its first version: progress, not failure.
    first = [o for o in rec.states("Model", "iris") if _with(o, "NoProductionVersion")]
    assert first and all(argocd_health(o)["status"] == "Progressing" for o in first)


def test_service_account_is_refused_outside_its_role(kube, release: Release, restricted_namespace, tmp_path) -> None:
    ns = restricted_namespace
    sa_client = config.new_client_from_config(config_file=str(token_kubeconfig(kube, release, tmp_path / "k")))
    core = client.CoreV1Api(sa_client)
    try:
        with pytest.raises(client.ApiException) as listed:
            core.list_namespaced_secret(ns)  # list returns contents: never granted
        assert listed.value.status == 403
        with pytest.raises(client.ApiException) as deleted:
            core.delete_namespace(ns)
        assert deleted.value.status == 403
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="direct"),
                           spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x:1")]))
        with pytest.raises(client.ApiException) as created:
            core.create_namespaced_pod(ns, pod)  # workloads only through Jobs and Deployments
        assert created.value.status == 403
        with pytest.raises(client.ApiException) as missing:
            core.read_namespaced_secret("no-such-secret", ns)  # get by name is granted (existence checks)
        assert missing.value.status == 404
    finally:
        sa_client.close()

    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"

    def allowed(verb: str, resource: str, group: str = "", namespace: str | None = ns, sub: str = "") -> bool:
        attrs = {"verb": verb, "resource": resource, "group": group, "subresource": sub}
        if namespace:
            attrs["namespace"] = namespace
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "resourceAttributes": attrs,
                         "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release.namespace}"]}}
        status, out = kube.raw("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        assert status == 201, out
        return bool(out["status"].get("allowed"))

    granted = [("watch", "datasets", "kultivar.io"), ("patch", "models", "kultivar.io", ns, "status"),
               ("create", "jobs", "batch"), ("delete", "jobs", "batch"), ("patch", "deployments", "apps"),
               ("create", "events", ""), ("get", "secrets", ""), ("list", "pods", ""),
               ("watch", "customresourcedefinitions", "apiextensions.k8s.io", None)]
    refused = [("list", "secrets", ""), ("watch", "secrets", ""), ("create", "pods", ""), ("delete", "pods", ""),
               ("create", "pods", "", ns, "exec"), ("get", "configmaps", ""), ("update", "models", "kultivar.io"),
               ("delete", "datasets", "kultivar.io"), ("create", "serviceaccounts", "", ns, "token"),
               ("impersonate", "serviceaccounts", ""), ("create", "rolebindings", "rbac.authorization.k8s.io"),
               ("escalate", "roles", "rbac.authorization.k8s.io"),
               ("bind", "clusterroles", "rbac.authorization.k8s.io", None),
               ("delete", "namespaces", "", None), ("list", "nodes", "", None),
               ("create", "customresourcedefinitions", "apiextensions.k8s.io", None),
               ("update", "customresourcedefinitions", "apiextensions.k8s.io", None)]
    assert [g for g in granted if not allowed(*g)] == []
    assert [r for r in refused if allowed(*r)] == []


def test_namespaced_mode_works_with_roles_only(kube, restricted_namespace, store_dir, tmp_path) -> None:
    ns = restricted_namespace
    with installed(kube, "--set", f"watchNamespaces={{{ns}}}", prefix="kvns") as rel:
        selector = f"app.kubernetes.io/instance={rel.name}"
        assert kube.rbac.list_cluster_role(label_selector=selector).items == []
        assert kube.rbac.list_cluster_role_binding(label_selector=selector).items == []
        assert [r.metadata.name for r in kube.rbac.list_namespaced_role(ns, label_selector=selector).items]
        with operator_as(kube, rel, tmp_path, store_dir, namespaces=(ns,)) as op, \
                LocalKubelet(Api(kube.api_client), ns, tmp_path / "pods"):
            create(kube, ns, sample("Dataset"))
            create(kube, ns, sample("Model"))
            create(kube, ns, sample("TrainingRun"))
            wait_reason(kube, ns, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
            wait_reason(kube, ns, "Model", "iris", "ProductionSet", timeout=30)
        # With Roles only, kopf's cluster scans (namespaces, CRDs) are refused: it retries them for about a
        # minute, then says "Not enough permissions" and serves the listed namespaces. Nothing else is refused.
        kopf_scans = ('resource "namespaces"', 'resource "customresourcedefinitions"', "Not enough permissions")
        unexpected = [line for line in op.forbidden_lines() if not any(s in line for s in kopf_scans)]
        assert not unexpected, "\n".join(unexpected[:20])
        # The Role is in the watched namespace only.
        other = kube.new_namespace()
        try:
            user = f"system:serviceaccount:{rel.namespace}:{rel.service_account}"
            sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "spec": {"user": user, "resourceAttributes": {"namespace": other, "verb": "list",
                                                                  "resource": "datasets", "group": "kultivar.io"}}}
            status, out = kube.raw("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
            assert status == 201 and not out["status"].get("allowed"), out
        finally:
            kube.delete_namespace(other)


def _manifests(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for file in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    order = {"Dataset": 0, "Model": 1, "TrainingRun": 2, "Deployment": 3}
    return sorted(docs, key=lambda d: order[d["kind"]])


def _apply(kube, ns: str, doc: dict[str, Any], *, force: bool, dry_run: bool = False) -> dict[str, Any]:
    query = f"?fieldManager=gitops-test&force={'true' if force else 'false'}" + ("&dryRun=All" if dry_run else "")
    status, out = kube.raw("PATCH", path(doc["kind"], ns, doc["metadata"]["name"]) + query, doc,
                           content_type="application/apply-patch+yaml")
    assert status in (200, 201), (doc["kind"], doc["metadata"]["name"], out)
    return out


def test_server_side_apply_twice_changes_nothing(kube, release, store_dir, tmp_path) -> None:
    """GitOps re-applies what is in git: after the operator reconciled, that must be a no-op on every spec."""
    sets = {"samples": _manifests(SAMPLES), "examples": _manifests(EXAMPLES)}
    namespaces = {}
    # examples/iris reads pvc://kultivar-artifacts/sources/iris.csv, which its upstream writes: here, the test.
    iris_data.write_local(store_dir, iris_data.original())
    try:
        for key in sets:
            namespaces[key] = kube.new_namespace(RESTRICTED, prefix=f"kt{key[:3]}")
            provision_store(Api(kube.api_client), namespaces[key], store_dir)
        with contextlib.ExitStack() as stack:
            stack.enter_context(operator_as(kube, release, tmp_path, store_dir))
            for key, ns in namespaces.items():
                stack.enter_context(LocalKubelet(Api(kube.api_client), ns, tmp_path / f"pods-{key}"))
            for key, ns in namespaces.items():
                for doc in sets[key]:
                    _apply(kube, ns, doc, force=True)
            for ns in namespaces.values():
                wait_reason(kube, ns, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
                wait_reason(kube, ns, "Model", "iris", "ProductionSet", timeout=30)

                def reconciled(ns: str = ns) -> bool:
                    for kind in PLURALS:
                        for o in kube.raw("GET", path(kind, ns))[1]["items"]:
                            if (o.get("status") or {}).get("observedGeneration") != o["metadata"]["generation"]:
                                return False
                    return True

                wait_for(reconciled, timeout=60, message=f"every object in {ns} reconciled")
                # Model servers too were admitted under "restricted" (as Job pods were, or nothing trained).
                wait_for(lambda ns=ns: kube.core.list_namespaced_pod(ns, label_selector="kultivar.io/deployment=iris")
                         .items, timeout=60, message=f"model-server pods in {ns}")

            for key, ns in namespaces.items():
                for doc in sets[key]:
                    kind, name = doc["kind"], doc["metadata"]["name"]
                    before = get(kube, ns, kind, name)
                    dry = _apply(kube, ns, doc, force=False, dry_run=True)  # what Argo CD's diff computes
                    assert dry["spec"] == before["spec"], f"{kind} {name}: a re-apply would change the spec"
                    after = _apply(kube, ns, doc, force=False)  # no conflict: nobody else owns spec fields
                    assert after["metadata"]["generation"] == before["metadata"]["generation"], (kind, name)
                    assert after["spec"] == before["spec"], (kind, name)
                    spec_owners = {m["manager"] for m in after["metadata"].get("managedFields") or []
                                   if "f:spec" in (m.get("fieldsV1") or {})}
                    assert spec_owners == {"gitops-test"}, (kind, name, spec_owners)
    finally:
        for ns in namespaces.values():
            kube.delete_namespace(ns)
            kube.raw("DELETE", f"/api/v1/persistentvolumes/kultivar-artifacts-{ns}")


def test_uninstall_keeps_crds_and_objects(kube, tmp_path) -> None:
    """crds.install=true adopts the CRDs; helm uninstall leaves them and every object (resource-policy keep)."""
    ns = kube.new_namespace(RESTRICTED, prefix="kvkeep")
    name = f"kv{secrets.token_hex(3)}"
    try:
        helm(kube, "install", name, str(CHART), "--namespace", ns, "--wait", "--timeout", "120s",
             "--take-ownership", *KWOK_VALUES)
        crd = kube.apiext.read_custom_resource_definition("datasets.kultivar.io")
        assert crd.metadata.annotations.get("meta.helm.sh/release-name") == name
        assert crd.metadata.annotations.get("helm.sh/resource-policy") == "keep"
        dataset = copy.deepcopy(sample("Dataset"))
        create(kube, ns, dataset)
        helm(kube, "uninstall", name, "--namespace", ns, "--wait", "--timeout", "60s")
        for plural in PLURALS.values():
            kube.apiext.read_custom_resource_definition(f"{plural}.kultivar.io")  # still there
        assert get(kube, ns, "Dataset", "iris")["metadata"]["name"] == "iris"
        assert kube.apps.list_namespaced_deployment(ns).items == []  # the operator itself is gone
    finally:
        helm(kube, "uninstall", name, "--namespace", ns, check=False)
        kube.delete_namespace(ns)


def test_peering_mode_with_its_rbac(kube, restricted_namespace, store_dir, tmp_path) -> None:
    """replicas=2 with peering.enabled: the chart brings kopf's peering CRD and object; the operator keeps it alive
    (and holds the leader-election Lease, with only the chart's RBAC)."""
    ns = restricted_namespace
    peering = f"kv-{secrets.token_hex(3)}"
    with installed(kube, "--set", "replicas=2", "--set", "peering.enabled=true", "--set", f"peering.name={peering}",
                   "--set", "crds.install=true", "--take-ownership", prefix="kvha") as rel:
        deployment = kube.apps.read_namespaced_deployment(rel.service_account, rel.namespace)
        assert deployment.spec.replicas == 2 and deployment.spec.strategy.type == "RollingUpdate"
        peering_path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering}"
        with operator_as(kube, rel, tmp_path, store_dir, peering=peering) as op, \
                LocalKubelet(Api(kube.api_client), ns, tmp_path / "pods"):
            create(kube, ns, sample("Dataset"))
            wait_reason(kube, ns, "Dataset", "iris", "Validated", timeout=TRAIN_TIMEOUT)
            alive = wait_for(lambda: (kube.raw("GET", peering_path)[1].get("status") or {}), timeout=30,
                             message=f"a keep-alive in ClusterKopfPeering {peering}")
            assert len(alive) == 1, alive
        assert not op.forbidden_lines(), "\n".join(op.forbidden_lines()[:20])
    kube.raw("DELETE", peering_path)
