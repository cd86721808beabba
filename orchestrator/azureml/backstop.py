"""The Event Grid backstop: a pipeline this tool compiled gets its report even when its report node never ran.

The report node is `settings.on_finalize`, a private-preview setting (docs/azureml-sdk.md#on_finalize), and a
pipeline-component deployment cannot carry it at all. Azure ML publishes `RunStatusChanged` to Event Grid
(docs/azureml.md#run-status-events); the Function's Event Grid trigger and `orchestrator worker` (an Event Grid
subscription delivering to its Service Bus queue) both hand the event to `report_event` here.

On a terminal status of a pipeline job carrying this tool's tags (a compiled job, or a job invoked from an endpoint
that `orchestrator publish` made: its tags come from the deployment, and its pipeline inputs hold what the report
node's would, rerun.report_inputs), when the report node left no report:
1. the run record is built from each notebook node's own output (`watch.backstop`, the code `run --wait` and
   the watchdog use), then junit.xml and report.html;
2. it is logged to the pipeline run's MLflow artifacts under `report/` (what studio shows on the pipeline
   run): the report output itself cannot be written from outside the job (docs/azureml.md#run-status-events);
3. with DevOps routing (the `devops` input), the test run is published and a waiting server
   job closed, the token read by name from Key Vault, as the report node does (devops_hook);
4. the stored report is written again with its devops.json, so a second delivery publishes nothing.

Exactly one test run and at most one TaskCompleted across report node, backstop and watchdog: the report
node's own report stops the backstop; a server job already completed in DevOps (closed by the report node or
the watchdog) stops it before anything is published; the stored devops.json stops a repeated event.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from orchestrator.azureml import devops_hook, watch
from orchestrator.errors import InfrastructureError
from orchestrator.results import AzureMLJob, RunResults

log = logging.getLogger("orchestrator.azureml")

EVENT_TYPE = "Microsoft.MachineLearningServices.RunStatusChanged"
# The tags compile.py puts on every pipeline job it builds (_job_tags), and no node carries: a child step's
# event, or a run of another tool, is dismissed on these before anything is read.
COMPILED_TAGS = ("orchestrator", "plan", "repository")
REPORTED_BY = "Event Grid backstop"
ARTIFACT_PATH = "report"  # the pipeline run's artifact folder the stored report lives in
STORED_FILES = ("results.json", "junit.xml", "report.html", "devops.json")


@dataclass(frozen=True)
class RunStatusChanged:
    """The fields of a RunStatusChanged event the backstop reads (docs/azureml.md#run-status-events)."""

    event_id: str
    run_id: str
    run_status: str
    run_type: str = ""
    experiment_name: str = ""
    run_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> RunStatusChanged | None:
        """From one event (a dict) in the Event Grid schema (`eventType`) or the CloudEvents one (`type`); data
        keys read without regard to case (Learn's examples spell some in PascalCase). None for another event
        type or an event without a run id."""
        if str(event.get("eventType") or event.get("type") or "") != EVENT_TYPE:
            return None
        raw = event.get("data")
        data = {str(k).lower(): v for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        if not data.get("runid"):
            return None
        tags = data.get("runtags")
        return cls(event_id=str(event.get("id") or ""), run_id=str(data["runid"]),
                   run_status=str(data.get("runstatus") or ""), run_type=str(data.get("runtype") or ""),
                   experiment_name=str(data.get("experimentname") or ""),
                   run_tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {})

    def dismissal(self) -> str | None:
        """Why this event needs no work, decided from the event alone (no call to Azure), or None."""
        if any(not self.run_tags.get(tag) for tag in COMPILED_TAGS):
            return f"run {self.run_id} is not a pipeline compiled by orchestrator (no {'/'.join(COMPILED_TAGS)} tags)"
        if self.run_status not in watch.TERMINAL:
            return f"run {self.run_id} is {self.run_status or 'of unknown status'}, not finished"
        return None


def parse_body(body: bytes) -> RunStatusChanged | None | str:
    """A Service Bus message body as Event Grid delivers it: one event object (a webhook's array of one is
    read too). The event, None for another Event Grid event type, or a string saying why it is not JSON."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return f"the Event Grid message body is not JSON: {exc}"
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, Mapping):
        return "the Event Grid message body is not one event object"
    return RunStatusChanged.parse(data)


@dataclass(frozen=True)
class Reported:
    """What the backstop did for one event, in words (`detail`), and whether it built a report."""

    detail: str
    built: bool = False
    test_run: int | None = None
    task_closed: bool = False


SecretGetter = Callable[[Mapping[str, Any]], Callable[[str], str]]


def report_job(client: Any, name: str, *, secrets: SecretGetter | None = None, work_dir: Path | None = None,
               policy: Any = None) -> Reported:
    """The backstop for pipeline job `name`; idempotent, so any number of deliveries in any order are safe.

    `secrets(config)`: the function reading a secret by name for the job's DevOps settings (default: Key
    Vault at the settings' key_vault_url, with this process's identity)."""
    from orchestrator.azureml import collect
    from orchestrator.azureml.rerun import input_value, report_inputs
    from orchestrator.azureml.submit import azure_errors, find_job
    from orchestrator.devops.http import DEFAULT_POLICY

    policy = policy or DEFAULT_POLICY  # a RetryPolicy
    with azure_errors(f"looking up pipeline job {name}"):
        job = find_job(client, name)
    # A job of a published endpoint has no report node: its pipeline inputs carry the report's, or, where the
    # job shows only the inputs its invocation gave, its component's defaults do (publish.py).
    inputs = report_inputs(job) if job is not None and str(getattr(job, "type", "")) == "pipeline" else None
    if job is not None and inputs is None and str(getattr(job, "type", "")) == "pipeline":
        from orchestrator.azureml.publish import published_inputs

        with azure_errors(f"reading the published component of pipeline job {name}"):
            inputs = published_inputs(client, job)
    if job is None or inputs is None:
        return Reported(f"job {name} is not a pipeline compiled by orchestrator: nothing to report")
    status = str(job.status)
    if status not in watch.TERMINAL:
        return Reported(f"pipeline {name} is {status} now (an older event arrived late): nothing to report yet")
    config = _devops_config(input_value(inputs, "devops"))
    title = str(input_value(inputs, "title") or job.experiment_name or "notebooks")
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orchestrator-backstop-", dir=work_dir) as scratch:
        run_dir = Path(scratch) / "run"
        with azure_errors(f"reading the report of pipeline job {name}"):
            own = watch.from_report_node(client, name, run_dir)
        if own is not None:
            return Reported(f"pipeline {name} ({status}) was reported by its report node: nothing to do")
        tracking = _tracking(client)
        run_id = _pipeline_run(tracking, client, name)
        built = not _restore(tracking, run_id, run_dir)
        if built:
            with azure_errors(f"collecting the outputs of pipeline job {name}"):
                results = watch.backstop(client, name, run_dir, expected=collect.decode_expected(str(input_value(inputs, "expected"))),
                                         run_id=name, title=title, reported_by=REPORTED_BY,
                                         azureml=AzureMLJob(job_name=name, status=status,
                                                            studio_url=getattr(job, "studio_url", None)))
            from orchestrator.report import build_report

            build_report(run_dir)
            _store(tracking, run_id, run_dir, results)
        stored = f"pipeline {name} ({status}) reported in its run's artifacts ({ARTIFACT_PATH}/)"
        if not config:
            return Reported(f"{stored}; no DevOps routing", built=built)
        closed = server_job_over(config, secrets, policy)
        if closed is not None:
            return Reported(f"{stored}; {closed}: the report node or the watchdog reported to DevOps, nothing "
                            "published", built=built)
        outcome = _publish(run_dir, config, secrets, name, status, getattr(job, "studio_url", None), policy)
        _store(tracking, run_id, run_dir, None)  # devops.json: a repeated event publishes nothing
        test_run = outcome.test_run.run_id if outcome.test_run is not None else None
        problems = "; ".join(outcome.all_problems)
        if problems and not (outcome.task_completed or outcome.already_completed):
            # Raised for a redelivery: devops.json is stored, so the retry publishes only what is missing.
            raise InfrastructureError(f"pipeline {name}: reporting to DevOps failed: {problems}")
        detail = (f"{stored} by the backstop: test run {test_run}, "
                  f"task {'closed' if outcome.task_completed else outcome.already_completed or 'not closed'}"
                  + (f"; problems: {problems}" if problems else ""))
        return Reported(detail, built=built, test_run=test_run, task_closed=outcome.task_completed)


def _devops_config(raw: Any) -> dict[str, Any] | None:
    """The report node's `devops` input (a JSON object, names only: compile.py refused secrets)."""
    if not raw:
        return None
    try:
        value = json.loads(str(raw))
    except ValueError:
        log.warning("the report node's devops input is not JSON; DevOps is not reported to")
        return None
    return devops_hook.check_config(value) if isinstance(value, dict) else None


def _getter(config: Mapping[str, Any], secrets: SecretGetter | None) -> Callable[[str], str]:
    if secrets is not None:
        return secrets(config)
    vault = config.get(devops_hook.KEY_VAULT_URL)
    if not vault:
        raise LookupError(f"the DevOps settings name no {devops_hook.KEY_VAULT_URL}")
    return devops_hook.key_vault_getter(str(vault))


def _context(config: Mapping[str, Any], secrets: SecretGetter | None) -> Any:
    return devops_hook.context_for(config, _getter(config, secrets))


def server_job_over(config: Mapping[str, Any], secrets: SecretGetter | None, policy: Any) -> str | None:
    """Why nothing is to be published, when a server job waits in DevOps routing and is over: its task record
    completed, or its token gone from Key Vault (the watchdog deletes it when its chain ends). None otherwise."""
    if not config.get(devops_hook.PROPERTIES):
        return None
    from orchestrator.devops.taskclient import TaskClient

    try:
        context = _context(config, secrets)
    except LookupError as exc:
        return f"its DevOps job token is no longer in Key Vault, so the job is over ({exc})"
    client = TaskClient(context, policy)
    try:
        state = client.state()
    finally:
        client.close()
    return f"its DevOps job is already closed ({state.describe()})" if state.task_completed else None


def _publish(run_dir: Path, config: Mapping[str, Any], secrets: SecretGetter | None, name: str, status: str,
             url: str | None, policy: Any) -> Any:
    from orchestrator.devops.publish import report_to_devops

    note = (f"Reported by the orchestrator's Event Grid backstop: pipeline {name} ended ({status}) without its "
            f"report step. Studio: {url or 'no link'}")
    return report_to_devops(run_dir, _context(config, secrets), notes=[note], policy=policy)


# -- the pipeline run's MLflow artifacts ------------------------------------------------------------------


def _tracking(client: Any) -> Any:
    """An MlflowClient for the workspace: its tracking URI from `workspaces.get` (the azureml:// scheme needs
    the azureml-mlflow package, docs/azureml.md#run-status-events)."""
    from mlflow.tracking import MlflowClient

    workspace = client.workspaces.get(getattr(client, "workspace_name", None))
    return MlflowClient(tracking_uri=str(workspace.mlflow_tracking_uri))


def _pipeline_run(tracking: Any, client: Any, name: str) -> str:
    """The pipeline job's MLflow run id: its name on the service; else the parent tag of a child's run."""
    try:
        return str(tracking.get_run(name).info.run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own MlflowException for an unknown run
        pass
    for child in watch.children(client, name):
        try:
            parent = tracking.get_run(str(child.name)).data.tags.get("mlflow.parentRunId")
        except Exception:  # noqa: BLE001 - a child that never got a run
            continue
        if parent:
            return str(parent)
    raise LookupError(f"pipeline job {name} has no MLflow run to store its report in")


def _restore(tracking: Any, run_id: str, run_dir: Path) -> bool:
    """The report an earlier delivery stored, copied into `run_dir`; False when there is none."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = Path(tracking.download_artifacts(run_id, ARTIFACT_PATH, scratch))
        except Exception:  # noqa: BLE001 - no artifact folder yet
            return False
        if not (local / "results.json").is_file():
            return False
        watch.copy_tree(local, run_dir)
    return True


def _store(tracking: Any, run_id: str, run_dir: Path, results: RunResults | None) -> None:
    """The report files (and devops.json once written) to the pipeline run's `report/` artifacts; the run's
    counts as metrics and its status as a tag the first time, as the report node logs them (finalize)."""
    if results is not None:
        from orchestrator.azureml.finalize import log_to_mlflow

        files = [run_dir / n for n in STORED_FILES if (run_dir / n).is_file()]
        log_to_mlflow(tracking, run_id, results, files)
        return
    marker = run_dir / "devops.json"
    if marker.is_file():
        tracking.log_artifact(run_id, str(marker), artifact_path=ARTIFACT_PATH)
