"""``make demo``: the whole loop, for real, on a real node.

1. A cluster: the current kubeconfig's if ``KUBECONFIG`` names one that answers (a kind cluster, say);
   otherwise this machine becomes a one-node cluster (``LocalCluster(node="real")``: containerd, kubelet,
   kube-proxy; needs root).
2. Images built without Docker (``hack/build-images.sh``) and loaded into the node's containerd (or into
   kind with ``kind load image-archive``).
3. The Helm chart installed, a namespace enforcing Pod Security "restricted", an artifact store, and in it
   the Dataset's source: the iris rows as a CSV file (:mod:`.iris_data`, the example's upstream).
4. ``examples/iris/`` applied, then the loop followed step by step: dataset validated -> model trained in
   a pod -> v1 registered and promoted -> served -> sample predictions -> the population changes: flowers
   far larger arrive, and the upstream appends labelled rows of them to the source -> drift detected ->
   retraining run on the refreshed data -> v2, scored against v1 on the same new held-out rows -> canary ->
   promoted.

Every wait shows what it is waiting for and the current state; a failure prints where it stopped and why
(conditions, Events, pod logs) and exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kultivar.k8s.client import Api, ApiError

from . import iris_data, paths
from . import node as real_node
from .cluster import LocalCluster, is_running, stop_from_state_dir
from .dev import provision_store
from .state import ClusterError, ClusterState

T = TypeVar("T")

NAMESPACE = "kultivar-demo"
RELEASE = "kultivar"
RELEASE_NAMESPACE = "kultivar-system"
NAME = "iris"  # Dataset, Model and Deployment in examples/iris/
FEATURES = 4
# Iris rows whose species everybody knows: setosa, versicolor, virginica; and the same flowers far larger, as the
# changed population sends them (their species is the one of the flower they were scaled from).
SAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]
LARGER_SAMPLES = [[round(x * iris_data.SCALE, 1) for x in row] for row in SAMPLES]
SPECIES = iris_data.SPECIES


class DemoFailed(RuntimeError):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


@dataclass
class Progress:
    began: float = field(default_factory=time.monotonic)
    interactive: bool = field(default_factory=lambda: sys.stderr.isatty())
    _line_open: bool = False

    def _stamp(self) -> str:
        elapsed = int(time.monotonic() - self.began)
        return f"[demo {elapsed // 60:02d}:{elapsed % 60:02d}]"

    def step(self, message: str) -> None:
        self._end_line()
        print(f"{self._stamp()} {message}", file=sys.stderr, flush=True)

    def done(self, message: str) -> None:
        self._end_line()
        print(f"{self._stamp()} \u2713 {message}", file=sys.stderr, flush=True)

    def waiting(self, what: str, state: str, waited: float) -> None:
        line = f"{self._stamp()}   waiting for {what} ({waited:.0f}s): {state}"
        if self.interactive:
            print(f"\r\033[K{line[:160]}", end="", file=sys.stderr, flush=True)
            self._line_open = True
        elif int(waited) % 15 == 0:  # a log, not a terminal: a line every 15 s
            print(line, file=sys.stderr, flush=True)

    def _end_line(self) -> None:
        if self._line_open:
            print(file=sys.stderr, flush=True)
            self._line_open = False


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def run_command(argv: list[str], what: str, progress: Progress, env: dict[str, str] | None = None) -> None:
    """Run a long command with its output streamed (indented), failing the demo with its tail."""
    progress.step(f"{what}: {' '.join(argv[:3])} ...")
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root(),
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
            tail = ([*tail, line.rstrip()])[-30:]
    if proc.returncode:
        raise DemoFailed(what, f"`{' '.join(argv)}` exited with {proc.returncode}:\n" + "\n".join(tail))


# --------------------------------------------------------------------------------------------------
# 1. The cluster


@dataclass
class Target:
    kubeconfig: Path
    local: bool  # this machine's real node (we load images into its containerd and own its store)
    context: str = ""


def _answers(kubeconfig: Path) -> bool:
    try:
        Api.connect(str(kubeconfig)).request("GET", "/version")
    except Exception:  # any failure means "not usable"
        return False
    return True


def _current_context(kubeconfig: Path) -> str:
    import yaml

    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        return str(yaml.safe_load(kubeconfig.read_text()).get("current-context") or "")
    return ""


def ensure_cluster(state_dir: Path, progress: Progress) -> Target:
    external = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if external and Path(external).expanduser().is_file() and not Path(external).resolve().is_relative_to(state_dir):
        kubeconfig = Path(external).expanduser().resolve()
        if not _answers(kubeconfig):
            raise DemoFailed("cluster", f"KUBECONFIG={kubeconfig} is set but its cluster does not answer; fix "
                                        "it, or unset KUBECONFIG to let the demo start a local one-node cluster")
        context = _current_context(kubeconfig)
        progress.done(f"using the cluster of KUBECONFIG={kubeconfig} (context {context or '?'})")
        return Target(kubeconfig, local=False, context=context)
    if is_running(state_dir):
        if ClusterState.load(state_dir).node != "real":
            raise DemoFailed("cluster", f"the local cluster running from {state_dir} has a kwok node, which runs no "
                                        "containers; stop it with `make cluster-down` and run `make demo` again")
        progress.done(f"local one-node cluster already running ({state_dir})")
        return Target(state_dir / "kubeconfig", local=True)
    problems = real_node.check_host()
    if problems:
        raise DemoFailed("cluster", "no KUBECONFIG set, and this machine cannot run a local node:\n  "
                         + "\n  ".join(problems))
    run_command([str(repo_root() / "hack" / "build-k8s.sh"), "all"], "Kubernetes binaries (cold ~12 min)",
                progress)
    progress.step("starting a local one-node cluster: etcd, API server, controllers, containerd, kubelet, "
                  "kube-proxy")
    cluster = LocalCluster(state_dir, detach=True, node="real",
                           progress=lambda m: print(f"    {m}", file=sys.stderr, flush=True))
    try:
        cluster.start()
    except ClusterError as exc:
        raise DemoFailed("cluster", str(exc)) from None
    progress.done(f"local cluster ready; KUBECONFIG={cluster.kubeconfig_path}")
    return Target(cluster.kubeconfig_path, local=True)


# --------------------------------------------------------------------------------------------------
# 2. Images


def image_version() -> str:
    import tomllib

    return str(tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["version"])


def load_images(target: Target, progress: Progress) -> None:
    script = str(repo_root() / "hack" / "build-images.sh")
    run_command([script, "build"], "images (runtime, operator, pause) without Docker", progress)
    if target.local:
        run_command([script, "import", "--address", str(real_node.CONTAINERD_SOCKET)],
                    "loading the images into the node's containerd", progress)
    elif target.context.startswith("kind-") and shutil.which("kind"):
        for archive in sorted(images_dir().glob(f"kultivar-*-{image_version()}.oci.tar")):
            run_command(["kind", "load", "image-archive", str(archive), "--name", target.context[len("kind-"):]],
                        f"loading {archive.name} into kind", progress)
    else:
        progress.step("not a kind cluster: the images must already be reachable by its nodes "
                      f"(kultivar-operator:{image_version()}, kultivar-runtime:{image_version()})")
    progress.done("images ready")


def images_dir() -> Path:
    return paths.cache_root() / "images"


# --------------------------------------------------------------------------------------------------
# 3. Install


def helm_binary() -> Path:
    versions_file = paths.find_versions_file()
    version = paths.parse_versions_env(versions_file).get("HELM_VERSION") if versions_file else None
    built = paths.cache_root() / "helm" / str(version) / "bin" / "helm"
    return built if built.exists() else Path(shutil.which("helm") or built)


def kubectl_binary() -> str:
    with contextlib.suppress(paths.BinaryNotFoundError):
        return str(paths.binary("kubectl"))
    return shutil.which("kubectl") or "kubectl"


def land_data(target: Target, api: Api, store: Path, frame: Any) -> str:
    """Write the Dataset's source file, as the example's upstream: into the store directory on a local node, or
    through a pod mounting the claim on any other cluster."""
    if target.local:
        iris_data.write_local(store, frame)
    else:
        try:
            iris_data.write_through_pod(api, NAMESPACE, frame, f"kultivar-runtime:{image_version()}")
        except (ApiError, RuntimeError, TimeoutError) as exc:
            raise DemoFailed("writing the Dataset's source", str(exc)) from None
    return f"{len(frame)} labelled rows in {iris_data.SOURCE_URI}"


def install(target: Target, api: Api, progress: Progress, store: Path) -> None:
    helm = helm_binary()
    if not helm.exists():
        run_command([str(repo_root() / "hack" / "build-tools.sh"), "helm"], "helm from its Go module", progress)
    version = image_version()
    args = [str(helm), "--kubeconfig", str(target.kubeconfig), "upgrade", "--install", RELEASE,
            str(repo_root() / "charts" / "kultivar"), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
            "--set", f"image.tag={version}", "--set", f"runtimeImage.tag={version}",
            "--set", "image.pullPolicy=IfNotPresent", "--set", "runtimeImage.pullPolicy=IfNotPresent",
            "--wait", "--timeout", "300s"]
    if not target.local:
        # Someone else's cluster: let the chart claim the store from the default StorageClass.
        args += ["--set", f"artifactStore.pvc.create.namespaces={{{NAMESPACE}}}",
                 "--set", "artifactStore.pvc.create.accessModes={ReadWriteOnce}"]
    _namespace(api, RELEASE_NAMESPACE)
    _namespace(api, NAMESPACE)
    if target.local:
        # The node is this machine: the store is a directory here, owned by the pods' UID.
        store.mkdir(parents=True, exist_ok=True)
        os.chown(store, 65532, 65532)
        provision_store(api, NAMESPACE, store)
    run_command(args, "installing the chart (CRDs, operator, RBAC)", progress)
    progress.done(f"operator running in namespace {RELEASE_NAMESPACE}; namespace {NAMESPACE} enforces "
                  "Pod Security \"restricted\"")
    progress.done(f"the Dataset's source: {land_data(target, api, store, iris_data.original())} (the iris set)")


def _namespace(api: Api, name: str) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    try:
        api.request("POST", "/api/v1/namespaces", body)
    except ApiError as exc:
        if exc.status != 409:
            raise
        api.request("PATCH", f"/api/v1/namespaces/{name}", {"metadata": {"labels": labels}},
                    content_type="application/merge-patch+json")


# --------------------------------------------------------------------------------------------------
# 4. The loop


def ready(obj: dict[str, Any] | None, kind: str = "Ready") -> tuple[str, str, str]:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status", ""), condition.get("reason", ""), condition.get("message", "")
    return "", "", ""


class Loop:
    def __init__(self, api: Api, kubeconfig: Path, progress: Progress, timeout: float) -> None:
        self.api, self.kubeconfig, self.progress, self.timeout = api, kubeconfig, progress, timeout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.api.get(kind, NAMESPACE, name) or {}

    def wait(self, what: str, check: Callable[[], tuple[T | None, str]], timeout: float | None = None) -> T:
        """Poll ``check`` (-> (result or None, a line describing the state)) until it yields a result."""
        began = time.monotonic()
        state = ""
        while time.monotonic() - began < (timeout or self.timeout):
            try:
                result, state = check()
            except ApiError as exc:
                result, state = None, f"API error {exc}"
            if result is not None:
                return result
            self.progress.waiting(what, state, time.monotonic() - began)
            time.sleep(1)
        raise DemoFailed(what, f"not reached within {timeout or self.timeout:.0f}s; last state: {state}")

    def apply_examples(self) -> None:
        examples = repo_root() / "examples" / "iris"
        result = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), "apply", "-n", NAMESPACE,
                                 "-f", str(examples)],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise DemoFailed("applying examples/iris", result.stderr.strip())
        for line in result.stdout.splitlines():
            self.progress.step(f"  kubectl apply: {line}")

    def dataset_validated(self) -> dict[str, Any]:
        def check() -> tuple[dict[str, Any] | None, str]:
            obj = self.get("Dataset", NAME)
            status, reason, message = ready(obj)
            if status == "False" and reason in ("DataValidationFailed", "SourceUnreadable"):
                raise DemoFailed("dataset validation", f"{reason}: {message}")
            return (obj if status == "True" else None), f"{reason or 'pending'} {message}"[:120]
        obj = self.wait("Dataset iris to be validated (a validation Job in a real pod)", check)
        st = obj["status"]
        self.progress.done(f"dataset validated: {st.get('rows')} rows, digest {str(st.get('digest'))[:19]}...")
        return obj

    def run_succeeded(self, name: str) -> dict[str, Any]:
        def check() -> tuple[dict[str, Any] | None, str]:
            obj = self.get("TrainingRun", name)
            status, reason, message = ready(obj, "Succeeded")
            if status == "False":
                raise DemoFailed(f"TrainingRun {name}", f"{reason}: {message}")
            return (obj if status == "True" else None), f"{reason or 'Pending'}: {message}"[:120]
        obj = self.wait(f"TrainingRun {name} to train in a pod", check)
        metrics = (obj.get("status") or {}).get("metrics") or {}
        self.progress.done(f"model trained by {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()
                                                                       if isinstance(v, int | float)))
        return obj

    def production(self, version: int) -> dict[str, Any]:
        def check() -> tuple[dict[str, Any] | None, str]:
            obj = self.get("Model", NAME)
            st = obj.get("status") or {}
            versions = [v.get("version") for v in st.get("versions") or []]
            if version in versions and st.get("productionVersion") != version:
                record = next(v for v in st["versions"] if v.get("version") == version)
                gate = record.get("gate") or {}
                if gate and not gate.get("passed", True):
                    raise DemoFailed(f"Model gate for v{version}", json.dumps(gate))
            return (obj if st.get("productionVersion") == version else None), \
                f"versions {versions}, production v{st.get('productionVersion')}"
        obj = self.wait(f"v{version} to be registered and promoted", check)
        self.progress.done(f"v{version} registered and promoted to production by the gate")
        return obj

    def serving(self, version: int) -> dict[str, Any]:
        def check() -> tuple[dict[str, Any] | None, str]:
            obj = self.get("Deployment", NAME)
            st = obj.get("status") or {}
            status, reason, message = ready(obj)
            done = status == "True" and st.get("stableVersion") == version and not st.get("canaryVersion")
            return (obj if done else None), (f"stable v{st.get('stableVersion')} canary v{st.get('canaryVersion')} "
                                             f"weight {st.get('canaryWeight')} {reason} {message}")[:140]
        obj = self.wait(f"Deployment iris to serve v{version}", check)
        self.progress.done(f"serving v{version} at {(obj.get('status') or {}).get('url')}")
        return obj

    # -- traffic through the API server's service proxy: works on any cluster, from anywhere ----------

    def infer(self, rows: list[list[float]]) -> list[Any]:
        body = {"inputs": [{"name": "input-0", "shape": [len(rows), FEATURES], "datatype": "FP64",
                            "data": [x for row in rows for x in row]}]}
        path = f"/api/v1/namespaces/{NAMESPACE}/services/{NAME}:http/proxy/v2/models/{NAME}/infer"
        out = self.api.request("POST", path, body)
        return list(out["outputs"][0]["data"])

    def sample_predictions(self, version: int) -> None:
        rows = SAMPLES + LARGER_SAMPLES
        predictions = self.wait("the first predictions", lambda: (self._try_infer(rows), "service warming up"),
                                timeout=120)
        right = 0
        for i, (row, label) in enumerate(zip(rows, predictions, strict=True)):
            name = SPECIES.get(int(label), str(label)) if isinstance(label, int | float) else label
            truth = SPECIES[i % len(SAMPLES)]
            right += name == truth
            kind = f"a {truth}" if i < len(SAMPLES) else f"a {truth} {iris_data.SCALE}x larger"
            self.progress.step(f"  v{version}: predict {row} ({kind}) -> {name}{'' if name == truth else '  (wrong)'}")
        self.progress.done(f"sample predictions served by v{version}: {right}/{len(rows)} right")

    def _try_infer(self, rows: list[list[float]]) -> list[Any] | None:
        try:
            return self.infer(rows)
        except (ApiError, KeyError, IndexError):
            return None

    @contextlib.contextmanager
    def drifted_traffic(self) -> Iterator[None]:
        """The changed population in a steady stream: real flowers, far larger (iris_data.larger_flowers)."""
        stop = threading.Event()
        sent = [0]
        flowers = iris_data.original()[iris_data.FEATURES].to_numpy()

        def send() -> None:
            rng = np.random.default_rng(1)
            while not stop.is_set():
                rows = iris_data.larger_flowers(flowers[rng.integers(len(flowers), size=1)], rng).tolist()
                with contextlib.suppress(Exception):
                    self.infer(rows)
                    sent[0] += 1
                stop.wait(0.02)

        threads = [threading.Thread(target=send, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            self.progress.step(f"  sent {sent[0]} drifted requests")

    def drift_detected(self) -> dict[str, Any]:
        def check() -> tuple[dict[str, Any] | None, str]:
            obj = self.get("Deployment", NAME)
            st = obj.get("status") or {}
            drift = st.get("drift") or {}
            drifted = any(c.get("type") == "Drifted" and c.get("status") == "True" for c in st.get("conditions") or [])
            return (obj if drifted and st.get("lastRetrain") else None), \
                f"drifted share {drift.get('driftedShare')}, samples {drift.get('samples')} in {drift.get('window')}"
        obj = self.wait("drift to be detected and a retraining run created", check)
        st = obj["status"]
        top = ", ".join(f"{f['feature']} PSI {f['psi']:.2f}" for f in (st.get("drift") or {}).get("topFeatures") or [])
        self.progress.done(f"drift detected ({top[:120]}); retraining run {st['lastRetrain']['trainingRun']} created")
        return obj

    def comparison(self, model: dict[str, Any], version: int) -> None:
        """How the gate judged a version: candidate and production on the same held-out rows when the version
        record has the training Job's evaluation, else each version's score on its own held-out split."""
        versions = {v.get("version"): v for v in (model.get("status") or {}).get("versions") or []}
        record = versions.get(version) or {}
        evaluation = record.get("evaluation") or {}
        metric = evaluation.get("metric") or record.get("metric") or "accuracy"
        production = evaluation.get("production") or {}
        candidate_score = (evaluation.get("candidate") or {}).get(metric)
        production_score = (production.get("metrics") or {}).get(metric)
        if isinstance(candidate_score, int | float) and isinstance(production_score, int | float):
            rows, digest = evaluation.get("rows"), str(evaluation.get("dataDigest") or "")
            line = (f"{metric} on the same {rows} held-out rows of {digest[:19]}...: v{version} {candidate_score:.3f}, "
                    f"v{production.get('version')} {production_score:.3f} ({candidate_score - production_score:+.3f})")
            interval = evaluation.get("interval") or {}
            if isinstance(interval.get("low"), int | float) and isinstance(interval.get("high"), int | float):
                line += (f", {float(interval.get('confidence') or 0.95):.0%} interval "
                         f"[{interval['low']:+.3f}, {interval['high']:+.3f}]")
            self.progress.done(line)
        else:
            scores = ", ".join(f"v{n} {metric} {(v.get('metrics') or {}).get(metric, float('nan')):.3f} "
                               f"on {str(v.get('datasetDigest'))[:19]}..." for n, v in sorted(versions.items()))
            self.progress.done(f"each version on its own held-out split: {scores}")
        gate = record.get("gate") or {}
        if gate:
            self.progress.step(f"  the gate: {gate.get('reason')}: {gate.get('message')}")

    def canary_promoted(self, version: int) -> None:
        seen_canary = [False]

        def check() -> tuple[bool | None, str]:
            obj = self.get("Deployment", NAME)
            st = obj.get("status") or {}
            if st.get("canaryVersion") == version:
                seen_canary[0] = True
            if version in (st.get("rolledBack") or []):
                raise DemoFailed(f"canary of v{version}", f"rolled back: {json.dumps(st.get('lastAnalysis'))}")
            done = st.get("stableVersion") == version and not st.get("canaryVersion")
            return (True if done else None), (f"canary v{st.get('canaryVersion')} step {st.get('canaryStep')} "
                                              f"weight {st.get('canaryWeight')}% "
                                              f"analysis {json.dumps(st.get('lastAnalysis'))}")[:150]
        self.wait(f"v{version}'s canary to be analysed and promoted", check)
        self.progress.done(f"v{version} rolled out as a canary{'' if seen_canary[0] else ' (steps passed quickly)'}"
                           " and promoted")


# --------------------------------------------------------------------------------------------------
# Failure report


def explain(api: Api) -> str:
    lines = []
    for kind in ("Dataset", "TrainingRun", "Model", "Deployment"):
        with contextlib.suppress(Exception):
            for obj in api.list_objects(kind, NAMESPACE):
                for c in (obj.get("status") or {}).get("conditions") or []:
                    lines.append(f"{kind}/{obj['metadata']['name']}: {c.get('type')}={c.get('status')} "
                                 f"{c.get('reason')}: {c.get('message')}")
    with contextlib.suppress(Exception):
        events = api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        lines.append("recent events:")
        lines += [f"  {e.get('type')} {e.get('reason')} {e['involvedObject'].get('kind')}/"
                  f"{e['involvedObject'].get('name')}: {e.get('message')}" for e in events[-25:]]
    with contextlib.suppress(Exception):
        for ns in (NAMESPACE, RELEASE_NAMESPACE):
            for pod in api.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]:
                name, phase = pod["metadata"]["name"], pod["status"].get("phase")
                restarts = sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])
                if phase in ("Failed", "Pending") or restarts or ns == RELEASE_NAMESPACE:
                    logs = api.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}/log", query={"tailLines": "20"})
                    lines.append(f"pod {ns}/{name} ({phase}, restarts {restarts}), last log lines:")
                    lines += [f"    {line}" for line in str(logs).splitlines()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def run(state_dir: Path, store: Path, timeout: float) -> int:
    progress = Progress()
    api: Api | None = None
    try:
        target = ensure_cluster(state_dir, progress)
        api = Api.connect(str(target.kubeconfig))
        load_images(target, progress)
        install(target, api, progress, store)
        loop = Loop(api, target.kubeconfig, progress, timeout)
        progress.step(f"applying examples/iris/ to namespace {NAMESPACE}")
        loop.apply_examples()
        loop.dataset_validated()
        loop.run_succeeded("iris-logreg-1")
        loop.production(1)
        loop.serving(1)
        loop.sample_predictions(1)
        progress.step(f"the population changes: flowers {iris_data.SCALE}x larger than any in the training data; "
                      "the upstream labels some and appends them to the Dataset's source")
        progress.done(f"the Dataset's source: {land_data(target, api, store, iris_data.refreshed())} "
                      f"(the iris set and {len(iris_data.larger())} larger flowers)")
        progress.step("injecting drift: a stream of the larger flowers")
        with loop.drifted_traffic():
            deployment = loop.drift_detected()
            retrain = deployment["status"]["lastRetrain"]["trainingRun"]
            loop.run_succeeded(retrain)
            loop.comparison(loop.production(2), 2)
            loop.canary_promoted(2)
        loop.sample_predictions(2)
    except DemoFailed as exc:
        progress.step(f"FAILED at {exc.where}: {exc.why}")
        if api is not None:
            print(explain(api), file=sys.stderr)
        print(f"\nThe demo stopped at: {exc.where}. The cluster is left running for inspection "
              f"(kubectl -n {NAMESPACE} get kultivar); `make cluster-down` stops a local one.", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - progress.began
    print(f"\nKultivar demo complete in {elapsed / 60:.1f} min: data -> training -> registry -> gated canary -> "
          f"drift -> retraining -> v2 in production.\n"
          f"  KUBECONFIG={target.kubeconfig}\n"
          f"  kubectl -n {NAMESPACE} get kultivar       # every Kultivar resource and its state\n"
          f"  make cluster-down                          # stop the local cluster", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kultivar.devcluster.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("KULTIVAR_CLUSTER_DIR") or paths.cache_root() / "cluster"))
    parser.add_argument("--store", type=Path, default=paths.cache_root() / "demo-store",
                        help="artifact store directory on a local node")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for each step")
    parser.add_argument("--down", action="store_true", help="stop the local cluster afterwards")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.expanduser().resolve()
    try:
        return run(state_dir, args.store.expanduser().resolve(), args.timeout)
    finally:
        if args.down:
            stop_from_state_dir(state_dir)


if __name__ == "__main__":
    sys.exit(main())
