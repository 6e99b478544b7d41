"""A real node for the local cluster: containerd, kubelet and kube-proxy on this machine.

The fast test tier runs pods on kwok's fake node. This module turns the same control plane into a real
one-node cluster, so that Jobs train and Deployments serve inside actual containers (``make demo`` and the
e2e tier). It needs root: a bridge, network namespaces, iptables and cgroups are host-wide.

What it sets up, all owned by the cluster's state directory except where noted:

* a bridge ``kultivar0`` with ``10.244.1.1/24``, created before the API server starts, so the API server
  can listen on that address: pods reach it through the ``kubernetes`` Service (kube-proxy DNATs to it)
  and nothing listens on the host's external interfaces;
* containerd with its own socket, a CRI config naming the locally built pause image, and a CNI bridge
  network without masquerading (pods have no route out of the machine). Its content store lives in the
  build cache (``~/.cache/kultivar/containerd``), so imported images survive a cluster restart;
* kubelet (cgroupfs driver: PID 1 is not systemd; cgroup v1 allowed) with a node certificate
  ``system:node:<name>`` so the Node authorizer is exercised, and never garbage-collecting images;
* kube-proxy in iptables mode, so ClusterIP Services route from pods and from the host.

:func:`cleanup` undoes everything from the state directory alone (``make cluster-down`` runs it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import paths

NODE_NAME = "kultivar-node-0"
BRIDGE = "kultivar0"
NODE_POD_CIDR = "10.244.1.0/24"
# The bridge's own address: the API server listens here, and it is the pods' gateway.
HOST_IP = "10.244.1.1"
CLUSTER_CIDR = "10.244.0.0/16"
# One real node per machine: the bridge, the kubelet's cgroups and the containerd socket are host-wide.
CONTAINERD_SOCKET = Path("/run/kultivar/containerd.sock")
CONTAINERD_STATE = Path("/run/kultivar/containerd")
CRI_NAMESPACE = "k8s.io"
# The kubelet's root holds unix sockets (pod resources, plugins), so its path must stay short (108 bytes):
# a fixed directory, not one under the cluster's state directory (which may be deep, e.g. pytest's).
KUBELET_ROOT = Path("/var/lib/kultivar/kubelet")
# kubelet's pods live under these cgroups (cgroupfs driver, cgroupsPerQOS).
KUBEPODS_CGROUP = "kubepods"

NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")
DEBIAN_PACKAGES = "containerd runc containernetworking-plugins iptables"
CNI_BIN_DIR = Path("/usr/lib/cni")

Progress = Callable[[str], None]


class NodeError(RuntimeError):
    """The real node cannot run here, or failed to start."""


def containerd_root() -> Path:
    """containerd's content store and snapshots: in the build cache, so imported images are kept."""
    return paths.cache_root() / "containerd"


def pause_image() -> str:
    """The sandbox image containerd uses for every pod, built locally by hack/build-images.sh.

    Tagged with Kultivar's version like the other images; containerd's CRI names bare references
    docker.io/library/..., so that is the name the sandbox image must have.
    """
    from importlib.metadata import version

    return os.environ.get("KULTIVAR_PAUSE_IMAGE") or f"docker.io/library/kultivar-pause:{version('kultivar')}"


# --------------------------------------------------------------------------------------------------
# Preconditions


def check_host() -> list[str]:
    """What this machine lacks to run a real node, as messages that say how to fix each; empty if fine."""
    problems = []
    if os.geteuid() != 0:
        problems.append("a real node needs root (bridge, network namespaces, iptables, cgroups); run as root, "
                        "or use a kind cluster: set KUBECONFIG and `make demo` uses it")
    missing = [b for b in ("containerd", "ctr", "runc", "iptables", "ip") if shutil.which(b) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)}: apt-get install {DEBIAN_PACKAGES} iproute2")
    if not (CNI_BIN_DIR / "bridge").exists():
        problems.append(f"no CNI plugins in {CNI_BIN_DIR}: apt-get install containernetworking-plugins")
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("no cgroup filesystem at /sys/fs/cgroup")
    return problems


def binaries() -> dict[str, Path]:
    found = {name: paths.binary(name) for name in ("kubelet", "kube-proxy")}
    for name in ("containerd", "ctr"):
        where = shutil.which(name)
        if where is None:
            raise NodeError(f"{name} not found: apt-get install {DEBIAN_PACKAGES}")
        found[name] = Path(where)
    return found


def containerd_running() -> bool:
    """Another real node (or one left behind) owns the containerd socket."""
    if not CONTAINERD_SOCKET.exists():
        return False
    result = subprocess.run(["ctr", "--address", str(CONTAINERD_SOCKET), "version"], capture_output=True,
                            timeout=10, check=False)
    return result.returncode == 0


# --------------------------------------------------------------------------------------------------
# Host network


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


def create_bridge() -> None:
    """The bridge with the host's address on the pod network; the CNI bridge plugin reuses it."""
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    addresses = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    if f"{HOST_IP}/" not in addresses:
        _run("ip", "addr", "add", f"{HOST_IP}/{NODE_POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Pod -> Service -> pod on the same bridge goes through iptables only with br_netfilter's hook on;
    # forwarding is what kube-proxy and kubelet expect. No masquerading is set up, so nothing leaves.
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        with contextlib.suppress(OSError):
            Path("/proc/sys", key).write_text(value)


# --------------------------------------------------------------------------------------------------
# Configuration files


def containerd_config(node_dir: Path) -> str:
    root = containerd_root()
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f'root = "{root / "root"}"',
        f'state = "{CONTAINERD_STATE}"',
        "[grpc]",
        f'  address = "{CONTAINERD_SOCKET}"',
        "[ttrpc]",
        f'  address = "{CONTAINERD_SOCKET}.ttrpc"',
        f"[{cri}]",
        f'  sandbox_image = "{pause_image()}"',
        "  disable_apparmor = true",
        # The build VMs drop CAP_SYS_RESOURCE, so no process may lower its OOM score below ours; without
        # this, every sandbox (score -998) fails in runc with "failed to update /proc/self/oom_score_adj".
        "  restrict_oom_score_adj = true",
        f"  [{cri}.cni]",
        f'    bin_dir = "{CNI_BIN_DIR}"',
        f'    conf_dir = "{node_dir / "cni"}"',
        f"  [{cri}.containerd]",
        '    snapshotter = "overlayfs"',
        f"    [{cri}.containerd.runtimes.runc]",
        '      runtime_type = "io.containerd.runc.v2"',
        f"      [{cri}.containerd.runtimes.runc.options]",
        "        SystemdCgroup = false",
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{root / "opt"}"',
        "",
    ])


def cni_config(node_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "kultivar",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # no route out: pods only talk to each other and to the host
                "hairpinMode": True,  # a pod reaching itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": HOST_IP}]],
                    "routes": [{"dst": CLUSTER_CIDR}, {"dst": "10.96.0.0/16"}],
                    "dataDir": str(node_dir / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    node_dir: Path, ca_file: Path, cert: Path, key: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The node's address (kubelet refuses a loopback node IP): the bridge's, like the API server's.
        "address": HOST_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        # PID 1 is not systemd here, and the hosts mount cgroup v1 (hybrid): cgroupfs, and v1 allowed.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "podCIDR": NODE_POD_CIDR,
        "maxPods": 32,
        # The images were imported by hand and cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "podLogsDir": str(node_dir / "pod-logs"),
        "serializeImagePulls": False,
        # Report status changes quickly: the tests and the demo wait on them.
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": CLUSTER_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # 0 leaves the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # NodePorts only on the host's loopback: never reachable from another machine.
        "nodePortAddresses": ["127.0.0.1/32"],
    }


def write_configs(node_dir: Path, kubelet: dict[str, Any], kube_proxy: dict[str, Any]) -> None:
    (node_dir / "cni").mkdir(parents=True, exist_ok=True)
    (node_dir / "pod-logs").mkdir(parents=True, exist_ok=True)
    (node_dir / "containerd.toml").write_text(containerd_config(node_dir))
    (node_dir / "cni" / "10-kultivar.conflist").write_text(json.dumps(cni_config(node_dir), indent=2) + "\n")
    (node_dir / "kubelet.yaml").write_text(yaml.safe_dump(kubelet, sort_keys=False))
    (node_dir / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy, sort_keys=False))


def containerd_args(node_dir: Path) -> list[str]:
    return ["--config", str(node_dir / "containerd.toml"), "--log-level", "warn"]


def kubelet_args(node_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        f"--config={node_dir / 'kubelet.yaml'}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={KUBELET_ROOT}",
        f"--hostname-override={NODE_NAME}",
        "--node-ip=" + HOST_IP,
        "--node-labels=kultivar.io/node=real",
        "--v=1",
    ]


def kube_proxy_args(node_dir: Path) -> list[str]:
    return [f"--config={node_dir / 'kube-proxy.yaml'}", "--v=1"]


# --------------------------------------------------------------------------------------------------
# Teardown


def _cgroup_dirs() -> list[Path]:
    """Every ``kubepods`` cgroup directory, in each v1 hierarchy and the unified one."""
    root = Path("/sys/fs/cgroup")
    found = []
    for hierarchy in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        candidate = hierarchy / KUBEPODS_CGROUP
        if candidate.is_dir():
            found.append(candidate)
    return found


def kill_pod_processes() -> int:
    """SIGKILL every process in the kubelet's pod cgroups; returns how many were signalled."""
    pids: set[int] = set()
    for top in _cgroup_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _remove_cgroups() -> None:
    for top in _cgroup_dirs():
        # Deepest first: a cgroup directory can only be removed once it has no children.
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def kill_shims() -> None:
    """containerd's runc shims outlive containerd; stop the ones that belong to our socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(CONTAINERD_SOCKET).encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _mounts_under(prefixes: list[Path]) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            mounts.append(point)
    return mounts


def unmount_under(prefixes: list[Path]) -> None:
    # Deepest first; lazily, so a busy mount never blocks teardown.
    for point in sorted(_mounts_under(prefixes), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


# containerd 1.6 puts its shims' sockets here whatever its state directory is.
SHIM_SOCKETS = Path("/run/containerd/s")


def _remove_dead_shim_sockets() -> None:
    """Shim sockets no process holds any more (ours, once the shims are gone); a live one is never touched,
    so another containerd on the machine keeps its own."""
    if not SHIM_SOCKETS.is_dir():
        return
    try:
        bound = {line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
                 if len(line.split()) >= 8}
    except OSError:
        return
    for entry in SHIM_SOCKETS.iterdir():
        if str(entry) not in bound:
            with contextlib.suppress(OSError):
                entry.unlink()


def _remove_netns() -> None:
    """The network namespaces containerd made for our pods (``/var/run/netns/cni-*``)."""
    netns_dir = Path("/var/run/netns")
    if not netns_dir.is_dir():
        return
    for entry in netns_dir.glob("cni-*"):
        _run("umount", "-l", str(entry), check=False)
        with contextlib.suppress(OSError):
            entry.unlink()


# The kubelet's own iptables chains (kube-proxy --cleanup removes only kube-proxy's).
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"), "nat": ("KUBE-KUBELET-CANARY",),
                  "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")}


def _remove_kubelet_iptables() -> None:
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chains in KUBELET_CHAINS.items():
            for chain in chains:
                for builtin in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"):
                    for _ in range(10):  # a rule may have been added more than once
                        if _run(tool, "-t", table, "-D", builtin, "-j", chain, check=False).returncode:
                            break
                _run(tool, "-t", table, "-F", chain, check=False)
                _run(tool, "-t", table, "-X", chain, check=False)


def cleanup(node_dir: Path, kube_proxy: Path | None = None, progress: Progress | None = None) -> None:
    """Undo a real node once its processes are stopped: pods, mounts, namespaces, bridge, rules, cgroups.

    Safe to run twice, and when the node never fully started.
    """
    say = progress or (lambda _msg: None)
    killed = kill_pod_processes()
    if killed:
        say(f"killed {killed} pod processes")
    kill_shims()
    time.sleep(0.2)
    unmount_under([node_dir, KUBELET_ROOT, CONTAINERD_STATE, containerd_root() / "root"])
    _remove_netns()
    _remove_dead_shim_sockets()
    if kube_proxy is not None and (node_dir / "kube-proxy.yaml").exists():
        # kube-proxy removes its own iptables chains.
        subprocess.run([str(kube_proxy), "--cleanup", f"--config={node_dir / 'kube-proxy.yaml'}"],
                       capture_output=True, check=False, timeout=60)
    _remove_kubelet_iptables()
    _run("ip", "link", "del", BRIDGE, check=False)
    _remove_cgroups()
    shutil.rmtree(CONTAINERD_STATE, ignore_errors=True)
    with contextlib.suppress(OSError):
        CONTAINERD_SOCKET.unlink()
    shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
    shutil.rmtree(node_dir / "cni-ipam", ignore_errors=True)
    say("node cleaned up (pods, mounts, network namespaces, bridge, iptables rules, cgroups)")
