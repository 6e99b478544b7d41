"""The model card: a Markdown page beside each version's artifact, for the people who decide whether to use it.

A small template of our own rather than ``skops.card``: skops' card needs the model object and renders sections
Kultivar does not have (citation, authors) while lacking the ones it needs (the same-data comparison, segments,
the gate). The card is written by the training pod before the manifest (which marks a finished attempt), so its
gate section is the pod's provisional decision with the Model's policy as the run saw it; the registry's decision
at registration (``status.versions[].gate``) is final and differs only when production changed meanwhile.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from kultivar.api.contracts import ModelManifest, ProductionRef
from kultivar.api.model import Promotion
from kultivar.domain.registry import GateDecision, gate
from kultivar.workloads.storage import ArtifactStore

CARD_NAME = "card.md"


def provisional_decision(promotion: dict[str, Any] | None, manifest: ModelManifest,
                         production: ProductionRef | None) -> GateDecision | None:
    """The gate's decision on these numbers under the Model's policy as the run saw it (None: policy unreadable)."""
    try:
        policy = Promotion.model_validate(promotion or {})
    except ValidationError:
        return None
    record = {"metric": manifest.metric, "metrics": manifest.metrics,
              "evaluation": manifest.evaluation.wire() if manifest.evaluation else None}
    return gate(policy, record, {"version": production.version} if production else None)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_card(manifest: ModelManifest, *, run_name: str, model: str | None, description: str | None,
                decision: GateDecision | None) -> str:
    """The card as Markdown."""
    title = f"Model card: {model or run_name}"
    lines = [f"# {title}", "", f"Trained by TrainingRun `{run_name}` on {manifest.createdAt or 'unknown date'}.", ""]
    lines += ["## Intended use", "", description or "_The Model has no `spec.description`; add one to say what "
                                                    "the model is for and what it must not be used for._", ""]
    lines += ["## Data", "",
              f"- Snapshot: `{manifest.datasetSnapshotUri}`",
              f"- Digest: `{manifest.datasetDigest}`",
              f"- Rows: {manifest.trainRows} for training, {manifest.testRows} held out (seed {manifest.seed})",
              f"- Target: `{manifest.target}` ({manifest.task})",
              f"- Features: {', '.join(f'`{f.name}` ({f.type})' for f in manifest.features)}", ""]
    params = manifest.bestParams or manifest.params
    lines += ["## Estimator", "", f"- Class: `{manifest.estimator}`",
              f"- Parameters: {', '.join(f'`{k}={v!r}`' for k, v in sorted(params.items())) or 'defaults'}"
              + (" (chosen by the search)" if manifest.bestParams else ""),
              f"- Artifact: `{manifest.artifact.uri}` (`{manifest.artifact.digest}`)",
              f"- scikit-learn {manifest.sklearnVersion}, skops {manifest.skopsVersion}", ""]
    lines += _evaluation_section(manifest)
    lines += ["## Promotion", ""]
    if decision is None:
        lines += ["The Model's promotion policy could not be read by this trainer; see the registry's decision in "
                  "the Model's `status.versions[].gate`.", ""]
    else:
        verdict = "passes" if decision.passed else "does not pass"
        lines += [f"**This version {verdict} the gate** ({decision.reason}): {decision.message}.", "",
                  "_Decided by the training Job under the Model's policy at the time; the registry's decision when "
                  "it registers the version (`status.versions[].gate`) is final._", ""]
    return "\n".join(lines)


def _evaluation_section(manifest: ModelManifest) -> list[str]:
    evaluation = manifest.evaluation
    if evaluation is None:
        return ["## Evaluation", "", *(f"- {k}: {_number(v)}" for k, v in sorted(manifest.metrics.items())), ""]
    production = evaluation.production
    prod_name = f"production v{production.version}" if production else "production"
    lines = ["## Evaluation", "",
             f"All models scored on the same {evaluation.rows} held-out rows of `{evaluation.dataDigest}` "
             f"(split seed {evaluation.splitSeed}). Baseline: {evaluation.baselineStrategy}, fitted on the same "
             "training rows.", ""]
    if evaluation.productionError:
        lines += [f"**Production could not be compared:** {evaluation.productionError}", ""]
    header = ["Metric", "This version", "Baseline"] + ([prod_name] if production else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in sorted(evaluation.candidate):
        row = [f"**{name}**" if name == evaluation.metric else name, _number(evaluation.candidate.get(name)),
               _number(evaluation.baseline.get(name))]
        if production:
            row.append(_number(production.metrics.get(name)))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    interval = evaluation.interval
    if interval is not None:
        lines += [f"Difference on {interval.metric} (this version minus {interval.against}): {interval.estimate:+.4g}, "
                  f"{interval.confidence * 100:g} % interval [{_number(interval.low)}, {_number(interval.high)}] "
                  f"({interval.method}, {interval.resamples} resamples, seed {interval.seed}).", ""]
    if evaluation.segments:
        lines += [f"### {evaluation.metric} by segment", "",
                  "| Feature | Value | Rows | This version | " + prod_name + " |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(s.feature)} | {_cell(s.value)} | {s.rows} | {_number(s.candidate)} | "
                  f"{_number(s.production)} |" for s in evaluation.segments]
        lines.append("")
    matrix = evaluation.confusionMatrix
    if matrix is not None:
        lines += ["### Confusion matrix (rows: actual class, columns: predicted)", "",
                  "| | " + " | ".join(_cell(label) for label in matrix.labels) + " |",
                  "|---|" + "---|" * len(matrix.labels)]
        lines += [f"| **{_cell(label)}** | " + " | ".join(str(c) for c in row) + " |"
                  for label, row in zip(matrix.labels, matrix.counts, strict=False)]
        lines.append("")
    for note in evaluation.omitted or []:
        lines += [f"_Not recorded: {_cell(note)}_", ""]
    return lines


def write_card(store: ArtifactStore, relpath: str, text: str) -> str:
    """Store the card (replacing one left by an attempt that did not finish) and return its URI."""
    uri = store.uri_for(relpath)
    if store.exists(uri):
        store.delete(relpath)
    store.write_once(relpath, text.encode())
    return uri
