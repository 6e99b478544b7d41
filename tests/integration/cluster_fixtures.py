"""The real control plane for the integration and chaos tiers: one cluster per pytest session.

Shared by tests/integration/conftest.py and tests/chaos/conftest.py, which import these fixtures (each tier
runs in its own pytest invocation, so each starts one cluster).

Set KULTIVAR_TEST_KUBECONFIG to run against an already running cluster (e.g. `make cluster-up`)
instead of starting one; the start-up then costs nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kapi import create, sample, wait_reason, weak_first_run
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from operator_process import OperatorProcess

from helpers import wait_for
from kultivar.devcluster.cluster import LocalCluster
from kultivar.devcluster.dev import provision_store
from kultivar.devcluster.localkubelet import LocalKubelet
from kultivar.k8s.client import Api

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"

_startup: dict[str, Any] = {}


@dataclass
class Kube:
    """Handles to the cluster under test."""

    kubeconfig: Path
    api_client: client.ApiClient
    state_dir: Path | None = None  # known when the harness (or `make cluster-up`) owns the cluster
    cluster: LocalCluster | None = None  # set only when this session started the cluster
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    batch: client.BatchV1Api = field(init=False)
    custom: client.CustomObjectsApi = field(init=False)
    apiext: client.ApiextensionsV1Api = field(init=False)
    rbac: client.RbacAuthorizationV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apiext = client.ApiextensionsV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)

    def new_namespace(self, labels: dict[str, str] | None = None, prefix: str = "kt") -> str:
        """Create a uniquely named namespace and wait until pods can be created in it.

        Pods are rejected (ServiceAccount admission) until the controller-manager has created the
        namespace's `default` ServiceAccount, hence the wait.
        """
        name = f"{prefix}-{secrets.token_hex(4)}"
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        self.core.create_namespace(body)
        wait_for(
            lambda: self.core.read_namespaced_service_account("default", name),
            timeout=30,
            message=f"the default ServiceAccount in namespace {name}",
            ignore=(ApiException,),
        )
        return name

    def raw_patch(self, path: str, body: Any) -> tuple[int, Any]:
        """A JSON merge patch (what `kubectl patch --type merge` sends)."""
        return self.raw("PATCH", path, body, content_type="application/merge-patch+json")

    def raw(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
        """A request with the body sent exactly as given (a manifest, or a deliberately invalid object)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        path, _, query = path.partition("?")
        params = [tuple(p.split("=", 1)) for p in query.split("&") if p]
        try:
            response = self.api_client.call_api(
                path, method, query_params=params, header_params=headers, body=body, auth_settings=["BearerToken"],
                _preload_content=False, _return_http_data_only=True,
            )
            status, data = response.status, response.data
        except ApiException as exc:
            status, data = exc.status, exc.body
        text = data.decode() if isinstance(data, bytes) else (data or "")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def _state_dir_of(kubeconfig: Path) -> Path | None:
    """The devcluster state directory a kubeconfig belongs to, if it is one (it sits at its top)."""
    directory = kubeconfig.resolve().parent
    return directory if (directory / "cluster.json").is_file() else None


def _crd_documents() -> list[dict[str, Any]]:
    if not CRDS_DIR.is_dir():
        return []
    documents = []
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        loaded = yaml.safe_load_all(path.read_text())
        documents += [d for d in loaded if d and d.get("kind") == "CustomResourceDefinition"]
    return documents


CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _crd_established(kube: Kube, name: str) -> bool:
    status, crd = kube.raw("GET", f"{CRD_PATH}/{name}")
    conditions = ((crd or {}).get("status") or {}).get("conditions") or [] if status == 200 else []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _apply_crd(kube: Kube, document: dict[str, Any]) -> None:
    name = document["metadata"]["name"]
    status, body = kube.raw("POST", CRD_PATH, document)
    if status == 409:  # a reused cluster may hold an older version: replace it
        _, current = kube.raw("GET", f"{CRD_PATH}/{name}")
        document = {
            **document,
            "metadata": {**document["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        status, body = kube.raw("PUT", f"{CRD_PATH}/{name}", document)
    if status not in (200, 201):
        message = body.get("message", body) if isinstance(body, dict) else body
        raise AssertionError(f"the API server rejected CRD {name} from {CRDS_DIR}: HTTP {status}: {message}")


def apply_crds(kube: Kube) -> list[str]:
    """Create or replace every CRD in crds/, exactly as written, and wait until each is Established."""
    names = []
    for document in _crd_documents():
        _apply_crd(kube, document)
        names.append(document["metadata"]["name"])
    for name in names:
        wait_for(lambda n=name: _crd_established(kube, n), timeout=30, message=f"CRD {name} Established")
    return names


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A real API server with controllers, a scheduler and a kwok node, plus clients for it."""
    cluster: LocalCluster | None = None
    reuse = os.environ.get("KULTIVAR_TEST_KUBECONFIG")
    if reuse:
        kubeconfig = Path(reuse).expanduser().resolve()
        if not kubeconfig.is_file():
            pytest.fail(f"KULTIVAR_TEST_KUBECONFIG={reuse} does not exist")
        _startup["mode"] = f"reused cluster from {kubeconfig}"
    else:
        cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), detach=False)
        began = time.monotonic()
        cluster.start()
        elapsed = time.monotonic() - began
        _startup["mode"] = f"started a local cluster in {elapsed:.1f}s (state: {cluster.state_dir})"
        kubeconfig = cluster.kubeconfig_path

    # Code under test (kopf, kubernetes.config) finds the cluster the usual way.
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    api_client: client.ApiClient | None = None
    try:
        config.load_kube_config(config_file=str(kubeconfig))
        api_client = client.ApiClient()
        handles = Kube(kubeconfig, api_client, _state_dir_of(kubeconfig), cluster)
        _startup["crds"] = apply_crds(handles)
        yield handles
    finally:
        if api_client is not None:
            api_client.close()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if cluster is not None:
            cluster.stop()


@pytest.fixture
def new_namespace(kube: Kube, store_dir: Path) -> Iterator[Callable[..., str]]:
    """A factory for namespaces (optionally labelled) with the artifact store's PVC, deleted after the test."""
    created: list[str] = []

    def factory(labels: dict[str, str] | None = None) -> str:
        name = kube.new_namespace(labels)
        created.append(name)
        provision_store(Api(kube.api_client), name, store_dir)
        return name

    yield factory
    for name in created:
        kube.delete_namespace(name)
        kube.raw("DELETE", f"/api/v1/persistentvolumes/kultivar-artifacts-{name}")


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact store: a directory the operator's pods see at the same path through a hostPath PV."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def operator(kube: Kube, store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as its own process, with a file artifact store shared with the local kubelet."""
    proc = OperatorProcess(kube.kubeconfig, tmp_path_factory.mktemp("operator"), store_dir)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def control_plane(kube: Kube) -> LocalCluster:
    """The cluster's processes, for tests that take the API server away (see LocalCluster.restart_apiserver)."""
    if kube.cluster is not None:
        return kube.cluster
    if kube.state_dir is None:
        pytest.fail(f"this test restarts the API server: {kube.kubeconfig} is not a local cluster's kubeconfig "
                    "(use `make cluster-up`'s, or let the session start its own cluster)")
    return LocalCluster(kube.state_dir, detach=True)  # a restarted API server outlives the session, as the rest


@pytest.fixture
def kubelet(kube: Kube, namespace: str, operator: OperatorProcess) -> Iterator[LocalKubelet]:
    """Runs the namespace's workload pods for real, as local processes (see local_kubelet.py)."""
    with LocalKubelet(Api(kube.api_client), namespace, operator.workdir / "pods") as runner:
        yield runner


@pytest.fixture
def namespace(new_namespace: Callable[..., str]) -> str:
    """A fresh namespace whose `default` ServiceAccount exists; deleted after the test."""
    return new_namespace()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _startup:
        terminalreporter.write_sep("-", "kultivar cluster")
        terminalreporter.write_line(_startup["mode"])
        terminalreporter.write_line(f"CRDs applied: {len(_startup.get('crds', []))}")


@pytest.fixture
def iris_v1(kube: Kube, namespace: str, kubelet: LocalKubelet) -> Iterator[None]:
    """v1 of Model iris registered and promoted, trained for real (the weaker first run, so a later one can win)."""
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    create(kube, namespace, weak_first_run())
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=180)
    yield
