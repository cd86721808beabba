"""The report node: runs last, whatever happened (settings.on_finalize), and writes the run folder.

Inside the pipeline, steps/report_step.py calls `main` with the node's inputs. It finds every notebook
node's outcome through MLflow (`discover`), writes results.json, junit.xml and report.html (the same report
code as a local run) to its output, logs the run's counts and each notebook's status and metrics to its own
MLflow run, and hands the folder to the DevOps hook when configured (`devops_hook`).

Needs mlflow; jinja2 for report.html. Never imports azure.ai.ml (the step environment need not have it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from orchestrator.azureml import collect, devops_hook, discover
from orchestrator.results import RunResults

log = logging.getLogger("orchestrator.azureml")

STATUS_TAG = "orchestrator.status"
SETTLE_VARIABLE = "ORCHESTRATOR_DISCOVERY_SETTLE_S"
DEFAULT_SETTLE_S = 30.0
_BATCH = 900


def settle_seconds() -> float:
    """How long the report waits for runs it cannot find yet (ORCHESTRATOR_DISCOVERY_SETTLE_S)."""
    try:
        return max(0.0, float(os.environ.get(SETTLE_VARIABLE, DEFAULT_SETTLE_S)))
    except ValueError:
        return DEFAULT_SETTLE_S


def gather(client: Any, *, own_run: str, run_key: str | None, expected: Sequence[collect.ExpectedStep], out: Path,
           parent_run: str | None = None) -> dict[str, collect.Finding]:
    """Findings for every expected step, with each node's files downloaded into out/steps/<id>/."""
    runs = discover.find_settled(client, own_run=own_run, run_key=run_key, expected=expected, parent_run=parent_run,
                                 settle_s=settle_seconds())
    return {step: discover.fetch_first(client, candidates, out / "steps" / step) for step, candidates in runs.items()}


def build(out: Path, results: RunResults) -> list[Path]:
    """results.json, then junit.xml and report.html with the local run's report code."""
    files = [collect.write(out, results)]
    try:
        from orchestrator.report import build_report
    except ImportError as exc:  # an environment without jinja2: results.json still tells the whole story
        log.warning("report.html and junit.xml not built (%s); results.json is complete", exc)
        return files
    built = build_report(out)
    files += [Path(built.junit), Path(built.html)]
    return files


def log_to_mlflow(client: Any, run_id: str, results: RunResults, files: Sequence[Path]) -> None:
    """The run's counts, each notebook's status and metrics, and the report files, on the report's run."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(f"notebooks_{status}", float(n), now, 0) for status, n in results.counts.items()]
    tags = [RunTag(STATUS_TAG, results.status)]
    for step in results.steps:
        sid = step.step
        tags.append(RunTag(f"status.{sid}", step.status))
        metrics.append(Metric(f"{sid}.passed", 1.0 if step.passed else 0.0, now, 0))
        for name, value in step.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                metrics.append(Metric(f"{sid}.{_metric_key(str(name))}", float(value), now, 0))
    # MLflow's log_batch limits: 1000 metrics and 100 tags per call.
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
    for start in range(0, len(tags), 100):
        client.log_batch(run_id, tags=tags[start : start + 100])
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="report")


def _metric_key(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_\-. :/]+", "_", name) or "metric"


def run(*, run_key: str | None, expected_text: str, title: str, out: Path, devops: Mapping[str, Any] | None,
        own_run: str | None = None, parent_run: str | None = None) -> RunResults:
    from mlflow.tracking import MlflowClient

    expected = collect.decode_expected(expected_text)
    own = own_run or discover.own_run_id()
    client = MlflowClient()
    out.mkdir(parents=True, exist_ok=True)
    findings = gather(client, own_run=own, run_key=run_key, expected=expected, out=out, parent_run=parent_run)
    results = replace(collect.assemble(expected, findings, run_id=own, title=title, reported_by="azureml report node"),
                      run_key=run_key)
    files = build(out, results)
    try:
        log_to_mlflow(client, own, results, files)
    except Exception as exc:  # noqa: BLE001 - the report on disk matters more than its copy in MLflow
        log.warning("could not log the report to MLflow: %s: %s", type(exc).__name__, exc)
    log.info("report status=%s %s", results.status, " ".join(f"{k}={v}" for k, v in results.counts.items() if v))
    log.info("%s", devops_hook.publish(out, devops))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The pipeline's report node (runs as settings.on_finalize).")
    parser.add_argument("--run-key", default=None)
    parser.add_argument("--expected", required=True, help="The pipeline's steps, JSON (or z:<compressed>)")
    parser.add_argument("--title", default="notebooks")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devops", default=None, help="DevOps publishing settings, JSON (names, never secrets)")
    parser.add_argument("--run-id", default=None, help="This node's MLflow run (default: MLFLOW_RUN_ID / AZUREML_RUN_ID)")
    parser.add_argument("--parent-run-id", default=None, help="The pipeline's MLflow run (default: from the run's tags)")
    args = parser.parse_args(argv)
    title = _text(args.title)
    devops = json.loads(args.devops) if args.devops else None
    run(run_key=_text(args.run_key) if args.run_key else None, expected_text=args.expected, title=title,
        out=args.out, devops=devops, own_run=args.run_id, parent_run=args.parent_run_id)
    # The report node succeeds when it wrote the report: the notebooks' outcome is in the report, and the
    # pipeline's own status already reflects failed notebook nodes.
    return 0


def _text(value: str) -> str:
    from orchestrator.azureml.names import JSON_PREFIX

    return str(json.loads(value[len(JSON_PREFIX) :])) if value.startswith(JSON_PREFIX) else value
