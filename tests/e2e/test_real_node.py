"""The real node on its own: what it exposes, and that it leaves nothing behind.

The pod network is the machine's own bridge: nothing of the cluster may listen beyond loopback and the
bridge's address, and `down` must remove what `up` created on the host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import listening_sockets, socket_inodes
from kultivar.devcluster import node
from kultivar.devcluster.cluster import REAL_NODE_COMPONENTS, LocalCluster

pytestmark = pytest.mark.e2e


def test_real_node_listens_only_on_loopback_and_the_bridge_and_cleans_up(tmp_path: Path) -> None:
    problems = node.check_host()
    assert not problems, "the e2e tier needs a machine that can run a real node:\n" + "\n".join(problems)
    cluster = LocalCluster(tmp_path / "cluster", detach=False, node="real")
    cluster.start()
    try:
        pids = cluster.pids()
        assert set(pids) == set(REAL_NODE_COMPONENTS)
        listening = listening_sockets()
        exposed = [f"{name}: {listening[i]}" for name, pid in pids.items() for i in socket_inodes(pid)
                   if i in listening and not listening[i].startswith(("127.0.0.1:", f"{node.HOST_IP}:"))]
        assert not exposed, f"sockets reachable from outside the host: {exposed}"
    finally:
        cluster.stop()
    assert subprocess.run(["ip", "link", "show", node.BRIDGE], capture_output=True, check=False).returncode != 0
    assert not node.CONTAINERD_SOCKET.exists()
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(node.KUBELET_ROOT) in line or str(tmp_path) in line]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    assert "KUBE-" not in rules, [r for r in rules.splitlines() if "KUBE-" in r][:5]
