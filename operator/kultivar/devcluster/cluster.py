"""A real Kubernetes control plane on 127.0.0.1, with a kwok fake node (or a real node, see node.py).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as plain child processes from
binaries built by ``hack/build-k8s.sh`` -- no Docker, no downloads. Everything listens on 127.0.0.1 only,
on ports chosen free at start, so several clusters (parallel CI jobs) can coexist on one machine.

State directory layout::

    kubeconfig            admin kubeconfig (embedded CA and client certificate)
    cluster.json          ports, server URL, etcd data directory: what `status`/`down` need later
    pki/                  CA, serving and client certificates, service-account keys, component kubeconfigs
    logs/<name>.log       each process's stdout and stderr
    pids/<name>.pid       each process's PID, so another process can stop the cluster (`make cluster-down`)

This module orchestrates; the pieces live beside it: ``state`` (cluster.json, components, PID files, etcd's
directory), ``process`` (PIDs, ports, signals), ``apiclient`` (stdlib API client), ``kubeconfig``.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import children, paths, pki
from . import node as real_node
from .apiclient import ApiClient
from .kubeconfig import CONTEXT_NAME, kubeconfig_dict, user_kubeconfig, write_kubeconfig
from .process import log_tail, pid_runs, reap_if_child, signal_all, wait_gone
from .state import (
    ALL_COMPONENTS,
    COMPONENTS,
    NODE_NAME,
    REAL_NODE_COMPONENTS,
    SHM_PREFIX,
    SHM_ROOT,
    STALE_SHM_AGE_S,
    ClusterError,
    ClusterState,
    new_etcd_dir,
    read_pids,
    remove_etcd_dir,
)

# Names that moved to the modules above, re-exported so `from kultivar.devcluster.cluster import ...` keeps working.
__all__ = [
    "ALL_COMPONENTS",
    "COMPONENTS",
    "CONTEXT_NAME",
    "KWOK_NODE_ANNOTATION",
    "NODE_KINDS",
    "NODE_NAME",
    "POD_CIDR",
    "REAL_NODE_COMPONENTS",
    "SERVICE_CIDR",
    "SHM_PREFIX",
    "SHM_ROOT",
    "STALE_SHM_AGE_S",
    "ApiClient",
    "ClusterError",
    "ClusterState",
    "ComponentStatus",
    "LocalCluster",
    "Progress",
    "api_client",
    "component_status",
    "fake_node",
    "is_running",
    "kubeconfig_dict",
    "stages_file",
    "stop_from_state_dir",
    "user_kubeconfig",
    "write_kubeconfig",
]

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_KINDS = ("kwok", "real")

Progress = Callable[[str], None]

_die_with_parent = children.die_with_parent


# --------------------------------------------------------------------------------------------------
# Stopping, from PID files alone


def stop_from_state_dir(state_dir: Path | str, timeout: float = 15.0, progress: Progress | None = None) -> None:
    """Stop a cluster using only its state directory: SIGTERM each recorded PID, wait, SIGKILL the rest.

    Clients go first and etcd last, so the API server does not spend its shutdown retrying etcd.
    """
    state_dir = Path(state_dir)
    say = progress or (lambda _msg: None)
    # A `dev` first (operator, local kubelet, model servers): its operator shuts down cleanly while the API
    # server still answers, and nothing it started outlives the cluster.
    children.stop_dev(state_dir / "dev", progress=say)
    pids = read_pids(state_dir)
    try:
        real = ClusterState.load(state_dir).node == "real"
    except (ClusterError, TypeError, ValueError):
        real = False
    # With a real node: the kubelet goes first (or it would restart the pods being killed), then the pods,
    # then containerd; etcd is always last.
    late = ("containerd", "etcd")
    groups: list[dict[str, int]] = [{n: p for n, p in pids.items() if n not in late}]
    groups += [{n: p for n, p in pids.items() if n == name} for name in late]
    for group in groups:
        if "containerd" in group:
            real_node.kill_pod_processes()
        signalled = signal_all(group, signal.SIGTERM)
        stubborn = wait_gone(signalled, timeout, reap_if_child)
        if stubborn:
            say(f"killing {', '.join(stubborn)} (no exit {timeout:.0f}s after SIGTERM)")
            signal_all(stubborn, signal.SIGKILL)
            wait_gone(stubborn, 5.0, reap_if_child)
        for name in group:
            say(f"stopped {name}")
    if real:
        kube_proxy = None
        with contextlib.suppress(paths.BinaryNotFoundError):
            kube_proxy = paths.binary("kube-proxy")
        real_node.cleanup(state_dir / "node", kube_proxy, say)
    with contextlib.suppress(ClusterError):
        remove_etcd_dir(ClusterState.load(state_dir).etcd_dir, state_dir)
    shutil.rmtree(state_dir / "pids", ignore_errors=True)


def api_client(state_dir: Path | str) -> ApiClient:
    """An admin client for the cluster of a state directory (files only, so any process can use it)."""
    state_dir = Path(state_dir)
    pki_dir = state_dir / "pki"
    state = ClusterState.load(state_dir)
    return ApiClient(state.apiserver_port, pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key", state.host)


def is_running(state_dir: Path | str) -> bool:
    """Every component alive and the API server ready."""
    if not all(s.running for s in component_status(state_dir)):
        return False
    try:
        return api_client(state_dir).readyz()[0]
    except (ClusterError, OSError, ssl.SSLError):
        return False


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool


def component_status(state_dir: Path | str) -> list[ComponentStatus]:
    pids = read_pids(Path(state_dir))
    try:
        names = ClusterState.load(Path(state_dir)).components
    except (ClusterError, TypeError, ValueError):
        names = COMPONENTS
    return [
        ComponentStatus(name, pids.get(name), bool(pids.get(name)) and pid_runs(pids[name], name))
        for name in names
    ]


# --------------------------------------------------------------------------------------------------
# The cluster


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler, and one node.

    ``node="kwok"`` (default, the fast tier): kwok plays a fake node; pods "run" without containers.
    ``node="real"`` (root; e2e tier and ``make demo``): containerd, kubelet and kube-proxy make this
    machine a real node, and the API server listens on the pod bridge's address so pods reach it.

    ``detach=False`` (tests): the processes die with this Python process (PR_SET_PDEATHSIG) and at exit.
    ``detach=True`` (``make cluster-up``): they run in their own session and outlive the command;
    stop them with :func:`stop_from_state_dir`.
    """

    def __init__(
        self, state_dir: Path | str, detach: bool = False, progress: Progress | None = None, node: str = "kwok"
    ) -> None:
        if node not in NODE_KINDS:
            raise ValueError(f"node must be one of {NODE_KINDS}, not {node!r}")
        self.node = node
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.detach = detach
        self._say = progress or (lambda _msg: None)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state: ClusterState | None = None
        self.pki: pki.ClusterPKI | None = None
        self.startup_seconds: float | None = None

    # -- public API ------------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return self._require_state().server

    def pids(self) -> dict[str, int]:
        return read_pids(self.state_dir)

    def start(self, timeout: float = 180.0) -> None:
        """Start every component and return once the cluster can run pods (see :meth:`wait_ready`)."""
        if any(s.running for s in component_status(self.state_dir)):
            raise ClusterError(f"a cluster is already running from {self.state_dir}; stop it first")
        began = time.monotonic()
        binaries = paths.all_binaries()  # fail before touching anything if a binary is missing
        if self.node == "real":
            binaries |= self._check_real_node()
        if not self.detach:
            atexit.register(self.stop)
        try:
            self._prepare_state_dir()
            if self.node == "real":
                real_node.cleanup(self.state_dir / "node")  # whatever a killed earlier run left behind
                real_node.create_bridge()  # before the API server, which listens on the bridge's address
            self._start_control_plane(binaries, began + timeout)
            self._start_node_side(binaries)
            self.wait_ready(max(1.0, began + timeout - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._say(f"cluster ready in {self.startup_seconds:.1f}s")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for /readyz, the fake node Ready and schedulable, and the `default` ServiceAccount.

        The ServiceAccount matters: the ServiceAccount admission plugin rejects pods in a namespace until
        the controller-manager has created it.
        """
        deadline = time.monotonic() + timeout
        api = self.api()
        state = self._require_state()
        self._poll(lambda: api.readyz()[0], deadline, "kube-apiserver /readyz")
        self._poll(lambda: self._node_ready(api), deadline, f"node {state.node_name} to become Ready ({state.node})")
        self._poll(
            lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            deadline,
            "the default ServiceAccount (kube-controller-manager)",
        )

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove etcd's tmpfs directory. Idempotent."""
        atexit.unregister(self.stop)
        stop_from_state_dir(self.state_dir, progress=self._say if self.detach else None)
        for proc in self._procs.values():  # reap our own children so no zombie lingers
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._procs.clear()

    def api(self) -> ApiClient:
        return api_client(self.state_dir)

    def stop_apiserver(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> list[str]:
        """Stop only the API server (an outage: every client sees connection refused); return its command line.

        Works for any running cluster of this state directory (its PID file and /proc say what runs), so
        a test on a reused cluster can take the API server away too. Start it again with :meth:`start_apiserver`.
        """
        pid = self.pids().get("kube-apiserver")
        if not pid or not pid_runs(pid, "kube-apiserver"):
            raise ClusterError(f"no kube-apiserver runs from {self.state_dir}")
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        signalled = signal_all({"kube-apiserver": pid}, sig)
        if wait_gone(signalled, timeout, reap_if_child):
            signal_all(signalled, signal.SIGKILL)
            wait_gone(signalled, 5.0, reap_if_child)
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._say("stopped kube-apiserver")
        return argv

    def start_apiserver(self, argv: list[str], timeout: float = 120.0) -> None:
        """Start the API server again with the command line :meth:`stop_apiserver` returned; wait for /readyz.

        Call it from a thread that lives as long as the cluster (e.g. the main thread): unless detached, the
        API server dies with the thread that started it (PR_SET_PDEATHSIG, see children.die_with_parent).
        """
        self._spawn("kube-apiserver", Path(argv[0]), argv[1:])
        api = self.api()
        self._poll(lambda: api.readyz()[0], time.monotonic() + timeout, "kube-apiserver /readyz after a restart")

    def restart_apiserver(self, down_for: float = 0.0, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the API server, leave it down ``down_for`` seconds, start it again and wait until it is ready."""
        argv = self.stop_apiserver(sig)
        time.sleep(down_for)
        self.start_apiserver(argv)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for another identity (certificate CN=user, O=groups), e.g. for RBAC tests."""
        return user_kubeconfig(self.state_dir, user, groups)

    # -- start-up steps --------------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        """Fresh PKI, ports and logs for every start: a state directory never mixes two clusters."""
        for stale in ("pids", "pki", "logs", "users", "etcd"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        for sub in ("pids", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        etcd_dir = new_etcd_dir(self.state_dir)
        self.state = ClusterState.allocate(etcd_dir, self.detach, self.node)
        self.state.save(self.state_dir)
        self.pki = pki.create_cluster_pki(self.state_dir / "pki", SERVICE_CIDR, self.state.host)
        self._write_kubeconfigs()

    def _write_kubeconfigs(self) -> None:
        state, cluster_pki = self._require_state(), self._require_pki()
        ca_pem = cluster_pki.ca.cert_pem
        write_kubeconfig(self.kubeconfig_path, state.server, ca_pem, cluster_pki.admin, pki.ADMIN_USER)
        pki_dir = cluster_pki.directory
        write_kubeconfig(
            pki_dir / "kube-controller-manager.kubeconfig",
            state.server,
            ca_pem,
            cluster_pki.controller_manager,
            "system:kube-controller-manager",
        )
        write_kubeconfig(
            pki_dir / "kube-scheduler.kubeconfig",
            state.server,
            ca_pem,
            cluster_pki.scheduler,
            "system:kube-scheduler",
        )

    def _start_control_plane(self, binaries: dict[str, Path], deadline: float) -> None:
        state = self._require_state()
        etcd = self._spawn("etcd", binaries["etcd"], self._etcd_args())
        (Path(state.etcd_dir) / "etcd.pid").write_text(f"{etcd.pid}\n")
        # No separate wait for etcd: the API server retries its connection, and /readyz covers etcd.
        self._spawn("kube-apiserver", binaries["kube-apiserver"], self._apiserver_args())
        began = time.monotonic()
        api = self.api()
        self._poll(lambda: api.readyz()[0], deadline, "kube-apiserver /readyz")
        self._say(f"kube-apiserver ready on {state.server} ({time.monotonic() - began:.1f}s)")

    def _start_node_side(self, binaries: dict[str, Path]) -> None:
        # These only need the API server, so they start together.
        self._spawn("kube-controller-manager", binaries["kube-controller-manager"], self._controller_manager_args())
        self._spawn("kube-scheduler", binaries["kube-scheduler"], self._scheduler_args())
        if self.node == "real":
            self._start_real_node(binaries)
            return
        self._spawn("kwok", binaries["kwok"], self._kwok_args())
        self._create_node()

    def _check_real_node(self) -> dict[str, Path]:
        problems = real_node.check_host()
        if problems:
            raise ClusterError("cannot run a real node here:\n  " + "\n  ".join(problems))
        if real_node.containerd_running():
            raise ClusterError(
                f"a real node already runs on this machine (containerd at {real_node.CONTAINERD_SOCKET}); "
                "stop it with `make cluster-down` (one real node per machine: the bridge and cgroups are shared)"
            )
        try:
            return real_node.binaries()
        except paths.BinaryNotFoundError as exc:
            raise ClusterError(f"{exc}\nbuild the node binaries with `make node-binaries`") from None
        except real_node.NodeError as exc:
            raise ClusterError(str(exc)) from None

    def _start_real_node(self, binaries: dict[str, Path]) -> None:
        state, cluster_pki = self._require_state(), self._require_pki()
        node_dir = self.state_dir / "node"
        ca_pem, d = cluster_pki.ca.cert_pem, cluster_pki.directory
        name = real_node.NODE_NAME
        kubelet_client = cluster_pki.ca.issue_client_cert(f"system:node:{name}", ["system:nodes"])
        write_kubeconfig(d / "kubelet.kubeconfig", state.server, ca_pem, kubelet_client, f"system:node:{name}")
        proxy_client = cluster_pki.ca.issue_client_cert("system:kube-proxy")
        write_kubeconfig(d / "kube-proxy.kubeconfig", state.server, ca_pem, proxy_client, "system:kube-proxy")
        serving = cluster_pki.ca.issue_serving_cert(name, dns_names=[name], ips=[real_node.HOST_IP])
        serving = serving.write(d, "kubelet-serving")
        assert serving.cert_path and serving.key_path
        real_node.write_configs(
            node_dir,
            real_node.kubelet_config(node_dir, cluster_pki.ca_cert, serving.cert_path, serving.key_path,
                                     state.kubelet_port, state.kubelet_healthz_port),
            real_node.kube_proxy_config(d / "kube-proxy.kubeconfig", state.proxy_healthz_port,
                                        state.proxy_metrics_port),
        )
        self._spawn("containerd", binaries["containerd"], real_node.containerd_args(node_dir))
        self._poll(real_node.containerd_running, time.monotonic() + 30, "containerd")
        self._say("containerd ready")
        self._spawn("kubelet", binaries["kubelet"], real_node.kubelet_args(node_dir, d / "kubelet.kubeconfig"))
        self._spawn("kube-proxy", binaries["kube-proxy"], real_node.kube_proxy_args(node_dir))

    def _create_node(self) -> None:
        status, body = self.api().request("POST", "/api/v1/nodes", fake_node(NODE_NAME))
        if status not in (201, 409):
            raise ClusterError(f"creating node {NODE_NAME} failed: HTTP {status}: {body}")
        self._say(f"node {NODE_NAME} created")

    def _node_ready(self, api: ApiClient) -> bool:
        status, node = api.get(f"/api/v1/nodes/{self._require_state().node_name}")
        if status != 200:
            return False
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        # The node lifecycle controller lifts the not-ready taint some time after Ready; until then the
        # scheduler would leave pods Pending, so "ready" means both.
        taints = {t["key"] for t in node.get("spec", {}).get("taints") or []}
        return conditions.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints

    # -- command lines ---------------------------------------------------------------------------

    def _etcd_args(self) -> list[str]:
        s = self._require_state()
        client, peer = f"http://127.0.0.1:{s.etcd_client_port}", f"http://127.0.0.1:{s.etcd_peer_port}"
        return [
            "--name=kultivar",
            f"--data-dir={Path(s.etcd_dir) / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kultivar={peer}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls=http://127.0.0.1:{s.etcd_metrics_port}",
            # Throw-away data on tmpfs: durability buys nothing and fsync costs seconds per test run.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        s, p = self._require_state(), self._require_pki()
        assert p.apiserver.cert_path and p.apiserver.key_path
        if s.node == "real":
            # Pods reach the API server through the `kubernetes` Service, whose endpoint is this address
            # on the pod bridge; the kubelet client certificate lets `kubectl logs/exec` reach the kubelet.
            kubelet_client = p.ca.issue_client_cert("kube-apiserver-kubelet-client", ["system:masters"])
            kubelet_client = kubelet_client.write(p.directory, "apiserver-kubelet-client")
            where = [f"--bind-address={s.host}", f"--advertise-address={s.host}",
                     f"--kubelet-client-certificate={kubelet_client.cert_path}",
                     f"--kubelet-client-key={kubelet_client.key_path}",
                     "--kubelet-preferred-address-types=InternalIP"]
        else:
            # Without these the `kubernetes` Service endpoints would point at the host's eth0 address.
            where = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
        return [
            f"--etcd-servers=http://127.0.0.1:{s.etcd_client_port}",
            *where,
            f"--secure-port={s.apiserver_port}",
            f"--cert-dir={p.directory / 'apiserver-generated'}",
            f"--tls-cert-file={p.apiserver.cert_path}",
            f"--tls-private-key-file={p.apiserver.key_path}",
            f"--client-ca-file={p.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Node,RBAC as in a real cluster, so the operator's RBAC manifests are actually exercised.
            "--authorization-mode=Node,RBAC",
            # PodSecurity is on by default; naming it keeps it on even if the defaults change. The default
            # plugins (ServiceAccount among them) stay enabled: nothing is disabled here.
            "--enable-admission-plugins=PodSecurity",
            "--allow-privileged=true",
            "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        s, p = self._require_state(), self._require_pki()
        return [
            f"--kubeconfig={p.directory / 'kube-controller-manager.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={s.controller_manager_port}",
            f"--service-account-private-key-file={p.sa_key}",
            # Publishes kube-root-ca.crt into every namespace, which projected SA token volumes need.
            f"--root-ca-file={p.ca_cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={p.ca_cert}",
            f"--cluster-signing-key-file={p.ca_key}",
            # Tests create and delete objects in bursts; client-side throttling would only add latency.
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
            # React quickly to the fake node becoming Ready (lifts the not-ready taint within ~1s).
            "--node-monitor-period=1s",
            "--node-monitor-grace-period=40s",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        s, p = self._require_state(), self._require_pki()
        return [
            f"--kubeconfig={p.directory / 'kube-scheduler.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={s.scheduler_port}",
            "--v=1",
        ]

    def _kwok_args(self) -> list[str]:
        s = self._require_state()
        return [
            f"--kubeconfig={self.kubeconfig_path}",
            f"--config={stages_file()}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            # kwok renews the node's Lease like a kubelet; 40s matches --node-monitor-grace-period.
            "--node-lease-duration-seconds=40",
            # kwok's server (healthz, metrics, fake logs/exec) listens only when given an address.
            f"--server-address=127.0.0.1:{s.kwok_port}",
        ]

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, binary: Path, args: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.state_dir / "logs" / f"{name}.log"
        # Appending: a component restarted (see restart_apiserver) keeps its earlier log; every start of the
        # cluster begins with an empty logs/ directory anyway.
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [str(binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=self._child_env(),
                start_new_session=self.detach,
                preexec_fn=None if self.detach else _die_with_parent(),
            )
        (self.state_dir / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
        self._procs[name] = proc
        self._say(f"started {name} (pid {proc.pid}, log {log_path})")
        return proc

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The components are told everything by flags; an inherited KUBECONFIG must not redirect them.
        env.pop("KUBECONFIG", None)
        # kwok keeps its work files in $KWOK_WORKDIR (default ~/.kwok); keep them with the cluster.
        env["KWOK_WORKDIR"] = str(self.state_dir / "kwok")
        return env

    def _check_processes(self) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                log = self.state_dir / "logs" / f"{name}.log"
                raise ClusterError(f"{name} exited with code {code}; last lines of {log}:\n{log_tail(log)}")

    def _poll(self, predicate: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll until ``predicate`` holds, failing fast if one of our processes has died meanwhile."""
        while True:
            self._check_processes()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if predicate():
                    return
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out waiting for {what}; logs are in {self.state_dir / 'logs'}")
            time.sleep(0.1)

    def _require_state(self) -> ClusterState:
        if self.state is None:
            self.state = ClusterState.load(self.state_dir)
        return self.state

    def _require_pki(self) -> pki.ClusterPKI:
        if self.pki is None:
            raise ClusterError("the cluster has not been started by this object")
        return self.pki


def stages_file() -> Path:
    """kwok's Stage configuration, shipped as package data."""
    path = resources.files("kultivar.devcluster").joinpath("stages.yaml")
    return Path(str(path))


def fake_node(name: str) -> dict[str, Any]:
    """A Node object for kwok to manage: it is picked up through the annotation kwok is started with."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        # Node status may be set on create (kubelets self-register that way); the scheduler needs it.
        "status": {"allocatable": dict(capacity), "capacity": dict(capacity)},
    }
