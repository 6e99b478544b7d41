"""The Helm chart, its rendered manifests, the Argo CD health checks, the images and the iris example.

Rendering needs helm and kube-score from `make tools` (hack/build-tools.sh, run by `make test`); a test that needs
one fails, naming it, when it is not built. The Lua tests need lupa (the test extra).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import needs_tool
from kultivar.api.resources import KINDS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kultivar"


def _load_hack_manifests() -> Any:
    spec = importlib.util.spec_from_file_location("kultivar_hack_manifests", ROOT / "hack" / "manifests.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manifests = _load_hack_manifests()
HELM = manifests.helm()
KUBE_SCORE = manifests.kube_score()
needs_helm = needs_tool(HELM, "helm (built by `make tools`)")

ALL_ON = ["--set", "replicas=2", "--set", "peering.enabled=true", "--set", "networkPolicy.enabled=true",
          "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
          "--set", "grafanaDashboard.enabled=true", "--set", "artifactStore.pvc.create.namespaces={team-a}"]
NAMESPACED = ["--set", "watchNamespaces={team-a,team-b}", "--set", "artifactStore.type=s3",
              "--set", "artifactStore.s3.url=s3://bucket/kultivar", "--set", "artifactStore.s3.secretName=store"]


def render(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests.helm_template(*args)) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# --- helm --------------------------------------------------------------------------------------------------


def test_argocd_progress_tables_are_generated_from_the_reasons() -> None:
    """The Lua tables and k8s/apply's Normal/Warning choice both come from kultivar.domain.reasons."""
    stale = [str(p.relative_to(ROOT)) for p, text in manifests.argocd_lua().items() if p.read_text() != text]
    assert not stale, f"run `make manifests`: the progressing tables of {stale} differ from domain/reasons.py"


@needs_helm
def test_rendered_manifests_are_fresh() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in manifests.rendered().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"run `make manifests`: {stale} differ from what the chart renders"


@needs_helm
@pytest.mark.parametrize("values", [[], ALL_ON, NAMESPACED], ids=["defaults", "all-options", "namespaced-s3"])
def test_helm_lint_strict(values: list[str]) -> None:
    done = subprocess.run([str(HELM), "lint", "--strict", str(CHART), *values], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_helm
@pytest.mark.parametrize("bad", ["iamge.tag=x", "artifactStore.type=nfs", "operator.workers=0",
                                 "image.digest=latest", "watchNamespaces={Team_A}"])
def test_values_schema_refuses_mistakes(bad: str) -> None:
    done = subprocess.run([str(HELM), "template", "k", str(CHART), "--set", bad], capture_output=True, text=True)
    assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr, bad


@needs_helm
def test_s3_store_needs_a_url() -> None:
    done = subprocess.run([str(HELM), "template", "k", str(CHART), "--set", "artifactStore.type=s3"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "s3/url" in done.stderr


@needs_helm
@needs_tool(KUBE_SCORE, "kube-score (built by `make tools`)")
@pytest.mark.parametrize("values", [[], ALL_ON, NAMESPACED], ids=["defaults", "all-options", "namespaced-s3"])
def test_kube_score_has_no_findings(values: list[str]) -> None:
    rendered = manifests.helm_template(*values)
    done = subprocess.run([str(KUBE_SCORE), "score", "--enable-optional-test", "container-seccomp-profile",
                           "--enable-optional-test", "container-ports-check", "-"],
                          input=rendered, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _pod_is_restricted(pod: dict[str, Any]) -> None:
    """The Pod Security "restricted" profile, field by field."""
    sc = pod.get("securityContext") or {}
    assert sc.get("runAsNonRoot") is True and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert sc.get("runAsUser", 1) != 0
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret", "name"}
    for volume in pod.get("volumes") or []:
        assert set(volume) <= allowed_volumes, volume
    for c in pod["containers"] + (pod.get("initContainers") or []):
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
        assert not csc.get("privileged") and csc.get("readOnlyRootFilesystem") is True
        assert csc.get("runAsUser", 1) != 0


@needs_helm
@pytest.mark.parametrize("values", [[], ALL_ON, NAMESPACED], ids=["defaults", "all-options", "namespaced-s3"])
def test_operator_pod_meets_pod_security_restricted(values: list[str]) -> None:
    (deployment,) = of_kind(render(*values), "Deployment")
    _pod_is_restricted(deployment["spec"]["template"]["spec"])


@needs_helm
def test_replicas_share_a_lease_and_roll() -> None:
    docs = render()
    (plain,) = of_kind(docs, "Deployment")
    # Only the Lease holder reconciles, so even one replica may roll: the new pod stands by until handed over.
    assert plain["spec"]["replicas"] == 1 and plain["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering" not in " ".join(plain["spec"]["template"]["spec"]["containers"][0]["args"])
    assert not of_kind(docs, "PodDisruptionBudget")
    env = {e["name"]: e for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    lease_name = env["KULTIVAR_LEASE_NAME"]["value"]
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == plain["metadata"]["namespace"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease_name],
            "verbs": ["get", "patch"]} in role["rules"]
    docs = render(*ALL_ON)
    (ha,) = of_kind(docs, "Deployment")
    assert ha["spec"]["replicas"] == 2 and ha["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=kultivar" in ha["spec"]["template"]["spec"]["containers"][0]["args"]
    assert of_kind(docs, "PodDisruptionBudget") and of_kind(docs, "ClusterKopfPeering")
    peering = of_kind(docs, "ClusterKopfPeering")[0]
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


@needs_helm
@pytest.mark.parametrize("values", [[], ALL_ON, NAMESPACED], ids=["defaults", "all-options", "namespaced-s3"])
def test_rbac_is_least_privilege(values: list[str]) -> None:
    rules = _rules(render(*values))
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule  # wildcards also grant whatever is added later
        assert not {"escalate", "bind", "impersonate", "deletecollection", "update"} & set(rule["verbs"]), rule
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets and all(r["verbs"] == ["get"] for r in secrets)  # never list/watch: they return contents
    assert not [r for r in rules if "pods" in r["resources"] and set(r["verbs"]) - {"list"}]
    assert not [r for r in rules if {"nodes", "namespaces", "roles", "clusterroles", "rolebindings",
                                     "clusterrolebindings", "serviceaccounts", "configmaps"} & set(r["resources"])]
    crd_rules = [r for r in rules if "customresourcedefinitions" in r["resources"]]
    assert all(r["verbs"] == ["get", "list", "watch"] for r in crd_rules)


@needs_helm
@pytest.mark.parametrize("values", [[], NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_rbac_covers_the_httproutes_the_gateway_router_writes(values: list[str]) -> None:
    """k8s/serving.py reads, creates and merge-patches HTTPRoutes (traffic.router: gatewayAPI); rbac.gatewayAPI
    grants exactly that (plus delete), and turning it off removes it."""
    def verbs(docs: list[dict[str, Any]]) -> set[str]:
        return {v for r in _rules(docs) if "gateway.networking.k8s.io" in r["apiGroups"]
                and "httproutes" in r["resources"] for v in r["verbs"]}

    assert verbs(render(*values)) == {"get", "create", "patch", "delete"}
    assert verbs(render(*values, "--set", "rbac.gatewayAPI=false")) == set()


@needs_helm
def test_namespaced_mode_is_roles_only() -> None:
    docs = render(*NAMESPACED)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = [r for r in of_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    (deployment,) = of_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    env = {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_STORE_URL"] == "s3://bucket/kultivar" and env["KULTIVAR_STORE_PVC"] == ""
    assert env["KULTIVAR_STORE_SECRET"] == "store"


@needs_helm
def test_operator_environment_matches_its_config() -> None:
    """Every variable the chart sets is one OperatorConfig reads, and they parse."""
    from kultivar.config import OperatorConfig

    (deployment,) = of_kind(render("--set", "operator.workloadPodLabels.team=ml"), "Deployment")
    env = {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    config_source = (ROOT / "operator" / "kultivar" / "config.py").read_text()
    for name in env:
        assert name == "HOME" or f'"{name}"' in config_source, f"{name} is not read by OperatorConfig"
    env = {k: v for k, v in env.items() if v}  # POD_NAME, POD_NAMESPACE come from the downward API
    config = OperatorConfig.from_env(env)
    assert config.store_url == "file:///var/lib/kultivar/artifacts" and config.store_pvc == "kultivar-artifacts"
    assert config.runtime_image == "kultivar-runtime:0.1.0" and config.pod_labels == {"team": "ml"}
    assert config.estimator_packages == ("sklearn", "xgboost", "lightgbm") and config.metrics_port == 8080


@needs_helm
def test_crd_templates_render_the_generated_crds_and_are_kept() -> None:
    rendered = {d["metadata"]["name"]: d for d in of_kind(render(), "CustomResourceDefinition")}
    for kind in KINDS:
        committed = yaml.safe_load((ROOT / "crds" / f"{kind.crd_name}.yaml").read_text())
        crd = rendered[kind.crd_name]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"] == committed["spec"]
    assert not of_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")


@needs_helm
def test_optional_objects() -> None:
    docs = render(*ALL_ON, "--set", "metrics.serviceMonitor.additionalLabels.release=prom")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (dashboard,) = of_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["kultivar.json"])["uid"] == "kultivar-overview"
    (policy,) = of_kind(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["namespace"] == "team-a" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not {"ServiceMonitor", "PodMonitor", "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim",
                "PodDisruptionBudget"} & {d["kind"] for d in render()}


def test_install_manifest_starts_with_a_restricted_namespace() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    assert docs[0]["kind"] == "Namespace"
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [d for d in docs[1:] if d["kind"] not in ("CustomResourceDefinition", "ClusterRole",
                                                           "ClusterRoleBinding")]
    assert {d["metadata"].get("namespace") for d in namespaced} == {docs[0]["metadata"]["name"]}


# --- Argo CD health checks -------------------------------------------------------------------------------

def _obj(kind: str, reason: str | None, status: str = "False", generation: int = 1, observed: int = 1,
         **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "kultivar.io/v1alpha1", "kind": kind,
                           "metadata": {"name": "x", "generation": generation}, "spec": extra.pop("spec", {})}
    if reason is not None:
        ready = {"type": "Ready", "status": status, "reason": reason, "message": "why", "observedGeneration": observed}
        conditions = [ready, *extra.pop("conditions", [])]
        obj["status"] = {"observedGeneration": observed, "conditions": conditions, **extra}
    return obj


def _reason(obj: dict[str, Any]) -> str:
    return str(((obj.get("status") or {}).get("conditions") or [{}])[0].get("reason"))


@pytest.mark.parametrize(("obj", "expected"), [
    (_obj("Dataset", None), "Progressing"),
    (_obj("Dataset", "Validating"), "Progressing"),
    (_obj("Dataset", "Validated", "True"), "Healthy"),
    (_obj("Dataset", "Validated", "True", generation=2, observed=1), "Progressing"),
    (_obj("Dataset", "DataValidationFailed"), "Degraded"),
    (_obj("Dataset", "ArtifactStoreUnavailable"), "Degraded"),
    (_obj("TrainingRun", "Training"), "Progressing"),
    (_obj("TrainingRun", "Registered", "True"), "Healthy"),
    (_obj("TrainingRun", "EstimatorImportFailed"), "Degraded"),
    (_obj("TrainingRun", "BackoffLimitExceeded"), "Degraded"),
    (_obj("Model", "NoProductionVersion"), "Progressing"),
    (_obj("Model", "NoProductionVersion", latestVersion=2), "Degraded"),
    (_obj("Model", "NoProductionVersion", latestVersion=2, spec={"promotion": {"policy": "Manual"}}), "Suspended"),
    (_obj("Model", "ProductionSet", "True"), "Healthy"),
    (_obj("Model", "VersionNotFound"), "Degraded"),
    (_obj("Deployment", "Deploying"), "Progressing"),
    (_obj("Deployment", "Serving", "True"), "Healthy"),
    (_obj("Deployment", "Serving", "True", conditions=[
        {"type": "Progressing", "status": "True", "reason": "CanaryStepping", "message": "step 2/2"}]), "Progressing"),
    (_obj("Deployment", "Serving", "True", conditions=[
        {"type": "Progressing", "status": "True", "reason": "CanaryPausedByUser", "message": "paused"}]), "Suspended"),
    (_obj("Deployment", "Serving", "True", conditions=[
        {"type": "Degraded", "status": "True", "reason": "RolledBack", "message": "v2 failed"}]), "Degraded"),
    (_obj("Deployment", "ModelNotFound"), "Degraded"),
    (_obj("Deployment", "HeaderRoutingNeedsGateway"), "Degraded"),
], ids=lambda v: v if isinstance(v, str) else f"{v['kind']}-{_reason(v)}")
def test_argocd_health(obj: dict[str, Any], expected: str) -> None:
    from gitops import argocd_health

    assert argocd_health(obj)["status"] == expected


def test_argocd_health_uses_no_string_library() -> None:
    """Argo CD gives health scripts from argocd-cm no string library (gopher-lua without OpenString)."""
    for kind in ("Dataset", "TrainingRun", "Model", "Deployment"):
        code = "\n".join(line.split("--")[0] for line in (CHART / "argocd" / f"{kind}.lua").read_text().splitlines())
        assert not re.search(r"\bstring\.|:\s*(find|sub|match|gsub|format|len|lower|upper)\s*\(", code), kind


# --- images and the example --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["operator", "runtime"])
def test_dockerfile_is_pinned_and_non_root(name: str) -> None:
    from kultivar.devcluster.paths import parse_versions_env

    text = (ROOT / "images" / f"{name}.Dockerfile").read_text()
    versions = parse_versions_env(ROOT / "hack" / "versions.env")
    # The Docker path and hack/build-images.sh (debootstrap) start from the same pinned Debian release and
    # packages: every ARG default that versions.env also names must equal it.
    args = {k: quoted or bare for k, quoted, bare in re.findall(r'^ARG (\w+)=(?:"([^"]*)"|(\S+))$', text, re.M)}
    shared = {k: v for k, v in args.items() if k in versions}
    assert {"DEBIAN_SUITE", "DEBIAN_PACKAGES"} <= set(shared), args
    assert shared == {k: versions[k] for k in shared}
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms[0] == "debian:${DEBIAN_SUITE}-slim" and all(f in (froms[0], "base") for f in froms), froms
    assert "-c constraints.txt" in text  # every dependency pinned
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["65532:65532"], users  # numeric, so runAsNonRoot can verify it
    assert re.search(r'^ENTRYPOINT \["kultivar"\]$', text, re.M)


def test_iris_example_is_complete_and_valid() -> None:
    docs = {}
    for file in sorted((ROOT / "examples" / "iris").glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            docs[doc["kind"]] = doc
    assert set(docs) == {k.kind for k in KINDS}
    for kind in KINDS:
        doc = docs[kind.kind]
        assert doc["apiVersion"] == kind.api_version and "namespace" not in doc["metadata"]
        kind.spec.model_validate(doc["spec"])
    assert docs["TrainingRun"]["spec"]["datasetRef"]["name"] == docs["Dataset"]["metadata"]["name"]
    assert docs["TrainingRun"]["spec"]["modelRef"]["name"] == docs["Model"]["metadata"]["name"]
    assert docs["Deployment"]["spec"]["modelRef"]["name"] == docs["Model"]["metadata"]["name"]
    assert docs["Deployment"]["spec"]["monitoring"]["retrain"]["enabled"] is True  # the loop closes


def test_kind_config_is_a_kind_cluster() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert any(n["role"] == "control-plane" for n in config["nodes"])


def test_dashboard_queries_only_metrics_kultivar_exports() -> None:
    """Every kultivar_* series the Grafana dashboard queries is exported by the operator or a model server."""
    dashboard = (CHART / "dashboards" / "kultivar.json").read_text()
    json.loads(dashboard)
    sources = (ROOT / "operator" / "kultivar" / "controllers" / "metrics.py").read_text() + \
        (ROOT / "operator" / "kultivar" / "serving" / "monitoring.py").read_text()
    queried = set(re.findall(r"\bkultivar_[a-z_]+", dashboard))
    assert queried
    for series in queried:
        family = re.sub(r"_(total|bucket|sum|count)$", "", series)
        assert f'"{family}"' in sources, f"{series}: no metric family {family!r} in the operator or the server"
