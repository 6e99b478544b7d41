"""The local control plane is a real cluster: controllers, scheduler, validation, admission, kwok node."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from helpers import listening_sockets, socket_inodes, wait_for
from kultivar.devcluster.cluster import COMPONENTS, NODE_NAME, POD_CIDR
from kultivar.devcluster.kubelet import EXTERNAL_FINISH_LABELS, finish_pod

pytestmark = pytest.mark.integration

# Never pulled: kwok only pretends to run containers.
IMAGE = "registry.invalid/kultivar/noop:1"


def _container(name: str = "main") -> client.V1Container:
    return client.V1Container(name=name, image=IMAGE)


def _job(name: str, labels: dict[str, str] | None = None, backoff_limit: int = 0) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels or {}),
                spec=client.V1PodSpec(restart_policy="Never", containers=[_container()]),
            ),
        ),
    )


def _job_condition(kube: Any, namespace: str, name: str, kind: str) -> bool:
    job = kube.batch.read_namespaced_job_status(name, namespace)
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or [])


def _job_pod(kube: Any, namespace: str, job: str) -> client.V1Pod | None:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return pods[0] if pods else None


def _running_job_pod(kube: Any, namespace: str, job: str) -> client.V1Pod:
    def running() -> client.V1Pod | None:
        pod = _job_pod(kube, namespace, job)
        return pod if pod and pod.status.phase == "Running" else None

    return wait_for(running, timeout=60, message=f"a Running pod of Job {job}")


def _terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    (status,) = pod.status.container_statuses
    assert status.state.terminated is not None, status.state
    return status.state.terminated


def test_deployment_becomes_available_on_the_kwok_node(kube: Any, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(containers=[_container()])
            ),
        ),
    )
    kube.apps.create_namespaced_deployment(namespace, deployment)

    def available() -> bool:
        status = kube.apps.read_namespaced_deployment_status("web", namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return status.available_replicas == 2 and conditions.get("Available") == "True"

    wait_for(available, timeout=60, message="Deployment web to have 2 available replicas")
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == NODE_NAME  # placed by the real scheduler
        assert pod.status.phase == "Running"
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)


def test_job_completes(kube: Any, namespace: str) -> None:
    kube.batch.create_namespaced_job(namespace, _job("train"))

    wait_for(lambda: _job_condition(kube, namespace, "train", "Complete"), timeout=60, message="Job Complete")
    pod = _job_pod(kube, namespace, "train")
    assert pod is not None and pod.status.phase == "Succeeded"
    assert _terminated(pod).exit_code == 0


def test_externally_finished_job_pod_carries_the_termination_message(kube: Any, namespace: str) -> None:
    kube.batch.create_namespaced_job(namespace, _job("external", labels=EXTERNAL_FINISH_LABELS))
    kube.batch.create_namespaced_job(namespace, _job("control"))

    external_pod = _running_job_pod(kube, namespace, "external")
    # kwok completes the unlabelled control Job; once it has, the labelled pod must still be Running.
    wait_for(lambda: _job_condition(kube, namespace, "control", "Complete"), timeout=60, message="control Job")
    assert kube.core.read_namespaced_pod(external_pod.metadata.name, namespace).status.phase == "Running"
    assert not _job_condition(kube, namespace, "external", "Complete")

    message = '{"accuracy": 0.93}'
    finish_pod(kube.core, namespace, external_pod.metadata.name, exit_code=0, message=message)

    wait_for(lambda: _job_condition(kube, namespace, "external", "Complete"), timeout=60, message="Job Complete")
    pod = kube.core.read_namespaced_pod(external_pod.metadata.name, namespace)
    assert pod.status.phase == "Succeeded"
    terminated = _terminated(pod)
    assert (terminated.exit_code, terminated.reason, terminated.message) == (0, "Completed", message)
    assert terminated.started_at <= terminated.finished_at
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False"


def test_externally_failed_job_pod_fails_the_job(kube: Any, namespace: str) -> None:
    kube.batch.create_namespaced_job(namespace, _job("doomed", labels=EXTERNAL_FINISH_LABELS, backoff_limit=0))
    pod = _running_job_pod(kube, namespace, "doomed")

    finish_pod(kube.core, namespace, pod.metadata.name, exit_code=3, message="out of memory")

    wait_for(lambda: _job_condition(kube, namespace, "doomed", "Failed"), timeout=60, message="Job Failed")
    pod = kube.core.read_namespaced_pod(pod.metadata.name, namespace)
    terminated = _terminated(pod)
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 3, "Error")
    assert terminated.message == "out of memory"


def test_api_server_validation_rejects_invalid_objects(kube: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as invalid_name:
        kube.core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Not_A_Valid_Name"))
        )
    assert invalid_name.value.status == 422

    # A selector that does not match the template's labels is rejected by Deployment validation.
    mismatched = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mismatched"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {
                "metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": IMAGE}]},
            },
        },
    }
    with pytest.raises(ApiException) as invalid_selector:
        kube.apps.create_namespaced_deployment(namespace, mismatched)
    assert invalid_selector.value.status == 422

    # A wrongly typed field is refused by the server's decoder. Sent raw: the typed client (pydantic)
    # would refuse it before it ever reached the server, which is not what is being tested.
    wrongly_typed = {
        **mismatched,
        "metadata": {"name": "typed"},
        "spec": {**mismatched["spec"], "replicas": "abc"},
    }
    status, body = kube.raw("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", wrongly_typed)
    assert status == 400, body
    assert "replicas" in body["message"]


def _pod(name: str, security: client.V1SecurityContext, pod_security: client.V1PodSecurityContext | None = None):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            security_context=pod_security,
            containers=[client.V1Container(name="main", image=IMAGE, security_context=security)],
        ),
    )


def test_pod_security_admission_enforces_restricted(kube: Any, new_namespace: Any) -> None:
    namespace = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})

    privileged = _pod("privileged", client.V1SecurityContext(privileged=True))
    with pytest.raises(ApiException) as rejected:
        kube.core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    assert "violates PodSecurity" in rejected.value.body

    compliant = _pod(
        "compliant",
        client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
        client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=1000,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    kube.core.create_namespaced_pod(namespace, compliant)
    wait_for(
        lambda: kube.core.read_namespaced_pod("compliant", namespace).status.phase == "Running",
        timeout=60,
        message="the compliant pod to run",
    )


def test_pod_deletion_waits_for_foreign_finalizers(kube: Any, namespace: str) -> None:
    """kwok terminates and deletes pods like a kubelet, but leaves other controllers' finalizers alone."""
    pod = _pod("guarded", client.V1SecurityContext())
    pod.metadata.finalizers = ["kultivar.io/test-guard"]
    kube.core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: kube.core.read_namespaced_pod("guarded", namespace).status.phase == "Running",
        timeout=60,
        message="pod Running",
    )

    kube.core.delete_namespaced_pod("guarded", namespace)
    terminated = wait_for(
        lambda: (p := kube.core.read_namespaced_pod("guarded", namespace)).status.phase == "Failed" and p,
        timeout=60,
        message="the deleted pod to be terminated",
    )
    assert terminated.metadata.deletion_timestamp is not None
    assert terminated.metadata.finalizers == ["kultivar.io/test-guard"]

    # kubernetes>=37 defaults PATCH to JSON Patch; this body is a merge patch, so say so.
    kube.core.patch_namespaced_pod(
        "guarded", namespace, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )

    def gone() -> bool:
        try:
            kube.core.read_namespaced_pod("guarded", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=30, message="the pod to be deleted once its finalizer is gone")


# --------------------------------------------------------------------------------------------------
# Network exposure


def test_every_cluster_socket_listens_on_loopback_only(kube: Any) -> None:
    if kube.state_dir is None:
        pytest.skip("the cluster's processes are unknown (KULTIVAR_TEST_KUBECONFIG outside a state dir)")
    pids = {p.stem: int(p.read_text()) for p in (kube.state_dir / "pids").glob("*.pid")}
    assert set(pids) == set(COMPONENTS)

    listening = listening_sockets()
    exposed, per_component = [], {}
    for name, pid in pids.items():
        addresses = sorted(listening[i] for i in socket_inodes(pid) if i in listening)
        per_component[name] = addresses
        exposed += [f"{name}: {a}" for a in addresses if not a.startswith("127.0.0.1:")]
    assert not exposed, f"sockets reachable from outside the host: {exposed}"
    # Each component serves something (health, API, metrics), so an empty list means we looked wrongly.
    assert all(per_component.values()), per_component
