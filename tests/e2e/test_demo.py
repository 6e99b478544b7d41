"""End to end on a real node: `make demo`'s scenario, from an empty machine state to v2 promoted by drift.

Everything is real here: a local one-node cluster (containerd, kubelet, kube-proxy; root), the images built
without Docker, the Helm chart, the operator in a pod, validation and training Jobs in pods, model servers
behind a Service. Minutes, not seconds, so it is its own tier (`make e2e`), which `.ci/run` runs after
`make test`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kultivar.devcluster import node
from kultivar.devcluster.cluster import stop_from_state_dir

pytestmark = pytest.mark.e2e

# The demo's own per-step timeouts decide failures; this only stops a wedged run.
WHOLE_RUN_TIMEOUT = 1800


@pytest.mark.timeout(WHOLE_RUN_TIMEOUT + 60)
def test_demo_runs_the_whole_loop_on_a_real_node(tmp_path: Path) -> None:
    problems = node.check_host()
    assert not problems, "the e2e tier needs a machine that can run a real node:\n" + "\n".join(problems)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # never someone else's cluster
    state_dir, store = tmp_path / "cluster", tmp_path / "store"
    command = [sys.executable, "-m", "kultivar.devcluster.demo", "--state-dir", str(state_dir),
               "--store", str(store), "--timeout", "420", "--down"]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WHOLE_RUN_TIMEOUT,
                                check=False)
    finally:
        stop_from_state_dir(state_dir)  # also when the demo was killed before its own --down
    # The demo's progress (stderr) is the test's explanation, pass or fail.
    sys.stderr.write(result.stderr[-20000:])
    assert result.returncode == 0, f"the demo failed (exit {result.returncode}); its report is above"
    summary = result.stdout
    assert "Kultivar demo complete" in summary
    for step in ("dataset validated", "model trained by iris-logreg-1", "v1 registered and promoted",
                 "sample predictions served", "drift detected", "v2 registered and promoted",
                 "v2 rolled out as a canary"):
        assert step in result.stderr, f"the demo never reported {step!r}"
