"""Play the kubelet for Kultivar's workload pods on the kwok node: run each pod's command as a local process.

The process gets exactly the pod's configuration (command, environment, the artifact store at the path
the PVC would be mounted at), and its termination-log file becomes the pod's termination message, the way
a kubelet reports it. So on a cluster without a real node, Jobs still run their real workload and the
operator reads their real result. Used by the integration tests and by `python -m kultivar.devcluster
kubelet` for local development.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kultivar.devcluster.children import ProcessGroups, ShuttingDown
from kultivar.devcluster.kubelet import FINISH_EXTERNAL, FINISH_LABEL, finished_status
from kultivar.devcluster.serviceproxy import ServiceProxy
from kultivar.devcluster.statuswrites import PendingWrites, transient
from kultivar.domain.dataset import PVC_ROOT
from kultivar.k8s.client import Api, ApiError

SELECTOR = f"{FINISH_LABEL}={FINISH_EXTERNAL}"
log = logging.getLogger(__name__)


def run_container(container: dict[str, Any], log_dir: Path, timeout: float = 1800,
                  children: ProcessGroups | None = None, claims: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the container's command locally; return its exit code and termination message.

    ``claims`` maps each claim a pvc:// source names to the host directory behind it (see
    :func:`source_claims`): the workload finds ``pvc://<claim>/<path>`` at ``$KULTIVAR_PVC_ROOT/<claim>/<path>``.
    """
    command = list(container.get("command") or []) + list(container.get("args") or [])
    if not command or command[0] != "kultivar":
        return 127, f"the local kubelet only runs kultivar workloads, not {command}"
    children = children or ProcessGroups()
    with tempfile.TemporaryDirectory() as tmp:
        termination = Path(tmp) / "termination-log"
        env = {
            "PATH": os.environ.get("PATH", ""),
            **{e["name"]: e.get("value", "") for e in container.get("env") or []},
            "HOME": tmp,
            "KULTIVAR_TERMINATION_LOG": str(termination),
        }
        if claims:  # the mounts a kubelet would make, as links in the pod's own directory
            (Path(tmp) / "pvc").mkdir()
            for claim, host_path in claims.items():
                (Path(tmp) / "pvc" / claim).symlink_to(host_path, target_is_directory=True)
            env["KULTIVAR_PVC_ROOT"] = str(Path(tmp) / "pvc")
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{command[1]}-{time.time_ns()}.log"
        with log_path.open("ab") as out:
            proc = children.start(command[1], [sys.executable, "-m", "kultivar.cli", *command[1:]], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            children.stop(proc)
            return 137, f"the local kubelet stopped it after {timeout:.0f}s"
        children.stop(proc)  # whatever it started and left behind (its process group)
        message = termination.read_text() if termination.exists() else ""
        if not message and returncode != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            message = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        return returncode, message[-4096:]


def source_claims(api: Api, pod: dict[str, Any]) -> dict[str, str]:
    """The claims mounted at PVC_ROOT/<claim> (a pvc:// Dataset source) whose volume is a hostPath on this machine.

    The local cluster's claims are bound to hostPath PersistentVolumes (see dev.provision_store), so the file a
    user puts in the store directory is the file a real pod would read from the claim.
    """
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    found: dict[str, str] = {}
    for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
        parent, _, claim = mount["mountPath"].rstrip("/").rpartition("/")
        ref = (volumes.get(mount["name"]) or {}).get("persistentVolumeClaim") or {}
        if parent != PVC_ROOT or not ref.get("claimName"):
            continue
        try:
            pvc = api.request("GET", f"/api/v1/namespaces/{pod['metadata']['namespace']}/persistentvolumeclaims/"
                                     f"{ref['claimName']}")
            pv_name = (pvc.get("spec") or {}).get("volumeName")
            pv = api.request("GET", f"/api/v1/persistentvolumes/{pv_name}") if pv_name else {}
        except ApiError as e:
            if e.status != 404:
                raise
            continue  # no such claim: the workload reports the missing file, as with an empty volume
        host_path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
        if host_path:
            found[claim] = host_path
    return found


def _owner_kind(pod: dict[str, Any]) -> str:
    refs = pod["metadata"].get("ownerReferences") or []
    return str(refs[0].get("kind", "")) if refs else ""


def _update_pod_status(api: Api, namespace: str, name: str, change: Callable[[dict[str, Any]], bool]) -> None:
    """Read the pod, let `change` edit its status (False: nothing to do), write it; retry when kwok raced us.

    Still conflicting after that: the 409 is raised (a caller that must land the write tries again later).
    """
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    for attempt in range(10):
        pod = api.request("GET", path)
        if not change(pod):
            return
        try:
            api.request("PUT", f"{path}/status", pod)
            return
        except ApiError as e:
            if e.status != 409 or attempt == 9:
                raise
            time.sleep(0.05)


def finish(api: Api, namespace: str, name: str, exit_code: int, message: str) -> None:
    """Write the pod's terminal status."""
    def change(pod: dict[str, Any]) -> bool:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        pod["status"] = finished_status(pod, exit_code, message)
        return True

    _update_pod_status(api, namespace, name, change)


_next_ip = itertools.count(2)
_ip_lock = threading.Lock()


def loopback_address(port: int) -> str:
    """A 127.0.0.N address whose port is free: every served pod gets its own, as pods get their own IPs."""
    with _ip_lock:
        for _ in range(250):
            host = f"127.0.0.{2 + (next(_next_ip) - 2) % 250}"
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            return host
    raise RuntimeError(f"no free loopback address for port {port}")


def reported_readiness(pod: dict[str, Any]) -> tuple[bool, str | None]:
    """What the API server holds for the pod: its Ready condition (missing: not ready) and its IP."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return ready, status.get("podIP")


def readiness_differs(pod: dict[str, Any], ready: bool, ip: str | None) -> bool:
    """Whether the server's view of the pod differs from the probe's: then the kubelet writes it.

    Level-based, as a kubelet's status sync: whoever changed the pod's condition (the node controller marks
    every pod of a NotReady node not ready, and restores nothing when the node is back), the next sweep
    sets it back to what the probe says.
    """
    held_ready, held_ip = reported_readiness(pod)
    return held_ready != ready or (ip is not None and held_ip != ip)


def set_pod_status(api: Api, namespace: str, name: str, ready: bool, ip: str | None = None) -> None:
    """Report the pod's IP and readiness, as a kubelet does from its readiness probe (no write if it holds)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def change(pod: dict[str, Any]) -> bool:
        if not readiness_differs(pod, ready, ip):
            return False
        status = pod.setdefault("status", {})
        if ip:
            status.update(podIP=ip, podIPs=[{"ip": ip}])
        conditions = [c for c in status.get("conditions") or [] if c.get("type") not in ("Ready", "ContainersReady")]
        for kind in ("ContainersReady", "Ready"):
            conditions.append({"type": kind, "status": str(ready), "lastTransitionTime": stamp})
        status["conditions"] = conditions
        for cs in status.get("containerStatuses") or []:
            cs["ready"] = ready
        return True

    _update_pod_status(api, namespace, name, change)


def report_restart(api: Api, namespace: str, name: str, restarts: int, exit_status: tuple[int, str] | None) -> None:
    """A server container that exited (exit_status: its code and termination message) and waits out its back-off,
    or that runs again (None): the status a kubelet writes, the last exit kept in lastState until the next one."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def change(pod: dict[str, Any]) -> bool:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            cs["restartCount"] = restarts
            if exit_status is None:
                cs["state"] = {"running": {"startedAt": stamp}}
                continue
            code, message = exit_status
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt") or stamp
            terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                          "finishedAt": stamp, **({"message": message} if message else {})}
            cs.update(ready=False, started=False, lastState={"terminated": terminated},
                      state={"waiting": {"reason": "CrashLoopBackOff",
                                         "message": f"back-off restarting failed container {cs.get('name')}"}})
        return True

    _update_pod_status(api, namespace, name, change)


class Server:
    """A long-running pod (an inference server) as a local process on its own loopback address."""

    def __init__(self, container: dict[str, Any], log_dir: Path, children: ProcessGroups,
                 rewrite: Callable[[str], str] = str) -> None:
        """rewrite: how a Service URL in the environment reaches the Service here (see serviceproxy)."""
        self.children = children
        command = list(container.get("command") or []) + list(container.get("args") or [])
        port = next((p["containerPort"] for p in container.get("ports") or []), 8080)
        self.ip = loopback_address(port)
        self.tmp = tempfile.TemporaryDirectory()
        pod_env = {e["name"]: rewrite(e.get("value", "")) for e in container.get("env") or []}
        # The container's /dev/termination-log: what the server writes there when it refuses to start.
        self.termination = Path(self.tmp.name) / "termination-log"
        self.env = {"PATH": os.environ.get("PATH", ""), **pod_env, "HOME": self.tmp.name, "KULTIVAR_HTTP_HOST": self.ip,
                    "KULTIVAR_TERMINATION_LOG": str(self.termination)}
        self.argv = [sys.executable, "-m", "kultivar.cli", *command[1:]]
        self.restarts = 0
        self.restart_at: float | None = None  # exited: when the kubelet's back-off lets it start again
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"serve-{self.ip}-{time.time_ns()}.log"
        self._log = self.log_path.open("ab")
        try:
            self.proc = self._start()
        except BaseException:
            self._log.close()
            self.tmp.cleanup()
            raise
        self.url = f"http://{self.ip}:{port}"
        probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
        self.probe_url = f"{self.url}{probe.get('path', '/')}" if probe else None

    def _start(self) -> subprocess.Popen[bytes]:
        self.termination.unlink(missing_ok=True)
        return self.children.start("serve", self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)

    def exited(self) -> tuple[int, str] | None:
        """The exit code and termination message of a server that stopped since it was (re)started, once."""
        code = self.proc.poll()
        if code is None or self.restart_at is not None:
            return None
        self.children.stop(self.proc)  # whatever it left behind (its process group)
        self.restarts += 1
        # restartPolicy Always: the kubelet's CrashLoopBackOff, 10 s doubling to 5 min.
        self.restart_at = time.monotonic() + min(300.0, 10.0 * 2 ** (self.restarts - 1))
        message = self.termination.read_text() if self.termination.exists() else ""
        return code, message[-4096:]

    def restart_due(self) -> bool:
        if self.restart_at is None or time.monotonic() < self.restart_at:
            return False
        self.restart_at = None
        self.proc = self._start()
        return True

    def probe(self) -> bool:
        """The readiness probe: what decides whether a Service sends the pod traffic."""
        if self.probe_url is None:
            return self.proc.poll() is None
        try:
            with urllib.request.urlopen(self.probe_url, timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.children.stop(self.proc)
        self._log.close()
        self.tmp.cleanup()


class LocalKubelet:
    """Runs the workload pods of one namespace (or all) that kwok left Running, until stopped.

    Every process it starts is one of ``children``'s process groups (see children.py): leaving the context
    stops them all together, a workload half-way included (its pod is then left Running, not failed: the
    pod did not fail, this stand-in kubelet went away).
    """

    def __init__(self, api: Api, namespace: str | None, log_dir: Path, interval: float = 0.3,
                 children: ProcessGroups | None = None) -> None:
        self.api = api
        self.children = children or ProcessGroups()
        self.namespace = namespace
        self.log_dir = log_dir
        self.interval = interval
        self.ran: list[str] = []
        self.unreported = PendingWrites()  # terminal statuses not yet written (the API server was away)
        self.servers: dict[str, Server] = {}  # "<ns>/<pod>" -> its running server
        self.paused = threading.Event()
        self.services: ServiceProxy | None = None  # Service URLs in servers' environments (started by __enter__)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="local-kubelet")

    def __enter__(self) -> LocalKubelet:
        self.services = ServiceProxy(self.api).start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.children.stop_all()  # servers and a running workload alike, in parallel
        self._thread.join(30)
        for server in self.servers.values():
            server.stop()  # already stopped: closes its log and removes its HOME
        self.servers.clear()
        if self.services is not None:
            self.services.close()

    def pending(self) -> list[dict[str, Any]]:
        base = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        out = self.api.request("GET", base, query={"labelSelector": SELECTOR})
        return [p for p in out.get("items") or []
                if (p.get("status") or {}).get("phase") == "Running"
                and f"{p['metadata']['namespace']}/{p['metadata']['name']}" not in self.ran]

    def _sync_servers(self, pods: list[dict[str, Any]]) -> None:
        """Start a server for each new serving pod; stop the servers of pods that are gone or terminating."""
        live = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods
                if not p["metadata"].get("deletionTimestamp")}
        for key in list(self.servers):
            if key not in live:
                self.servers.pop(key).stop()
        for key, pod in live.items():
            if key in self.servers or (pod.get("status") or {}).get("phase") != "Running":
                continue
            self.servers[key] = Server(pod["spec"]["containers"][0], self.log_dir, self.children,
                                       self.services.rewrite if self.services else str)
            # The pod's IP is a loopback address on this machine: unlike the Service, the host can reach it.
            log.info("serving pod %s at %s", key, self.servers[key].url)
        for key, server in self.servers.items():
            namespace, name = key.split("/", 1)
            if (exit_status := server.exited()) is not None:
                log.info("server of pod %s exited %d; restarting after back-off", key, exit_status[0])
                report_restart(self.api, namespace, name, server.restarts, exit_status)
            elif server.restart_due():
                report_restart(self.api, namespace, name, server.restarts, None)
            ready = server.probe()
            if readiness_differs(live[key], ready, server.ip):
                namespace, name = key.split("/", 1)
                set_pod_status(self.api, namespace, name, ready, server.ip)

    def run_pod(self, pod: dict[str, Any]) -> tuple[int, str]:
        """Run the pod's container to its end: its exit code and termination message."""
        return run_container(pod["spec"]["containers"][0], self.log_dir, children=self.children,
                             claims=source_claims(self.api, pod))

    def run_once(self) -> int:
        count = 0
        self.unreported.flush()  # first: the pods that finished while the API server was away
        base = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        everything = self.api.request("GET", base, query={"labelSelector": SELECTOR}).get("items") or []
        self._sync_servers([p for p in everything if _owner_kind(p) == "ReplicaSet"])
        for pod in self.pending():
            if _owner_kind(pod) == "ReplicaSet":
                continue
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            self.ran.append(f"{ns}/{name}")
            log.info("running pod %s/%s locally", ns, name)
            try:
                code, message = self.run_pod(pod)
            except Exception:  # e.g. the API server went away before the workload started: run it next sweep
                self.ran.remove(f"{ns}/{name}")
                raise
            if self._stop.is_set():  # stopped by us, not failed: a later kubelet runs the pod again
                log.info("pod %s/%s interrupted; left Running", ns, name)
                return count
            log.info("pod %s/%s exited %d", ns, name, code)
            self.unreported.add(f"{ns}/{name}", functools.partial(finish, self.api, ns, name, code, message))
            self.unreported.flush()
            count += 1
        return count

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            if self.paused.is_set():
                continue
            try:
                self.run_once()
                failing = False
            except ShuttingDown:
                return
            except Exception as exc:  # keep playing the kubelet through API hiccups (an outage: once, not per sweep)
                if not failing or not transient(exc):
                    log.exception("local kubelet sweep failed")
                failing = True
