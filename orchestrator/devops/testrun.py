"""Publish a run folder as one Azure DevOps test run, through the azure-devops SDK (v7_1 TestClient).

The sequence mirrors the agent's own publisher (docs/devops-protocol.md#test-client): create the run (automated, linked to
the build, state InProgress: 3.2), add one result per notebook in batches of at most 1000 (3.3), attach each
executed notebook and its HTML page to its result and junit.xml and report.html to the run (3.4), then PATCH
the run to Completed (3.5). Each result is named as the agent's JUnit reader names junit.xml's testcase
(testCaseTitle = automatedTestName = its name, automatedTestStorage = its classname: report/junit.py
test_identity), so a notebook's history is one line whichever way its results reached DevOps (this code or
PublishTestResults@2).

Only failures of the service are handled here, and they never raise: they end up in the outcome's
`problems`, because a reporting failure must never turn into a failure of the notebooks' own run.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import (
    DEFAULT_POLICY,
    DevOpsAuthError,
    DevOpsError,
    DevOpsUnavailableError,
    RetryPolicy,
    call_with_retries,
    guard_session,
    utc_iso,
)
from orchestrator.devops.fields import (
    OUTCOMES,
    TEXT_LIMIT,
    UNFINISHED_OUTCOME,
    attachment_name,
    clip,
    error_message,
    result_comment,
    run_comment,
    tail,
)
from orchestrator.errors import MissingExtraError
from orchestrator.report.files import executed_notebook
from orchestrator.report.junit import test_identity
from orchestrator.results import RunResults, load_results
from steps.step_result import StepResult

log = logging.getLogger("orchestrator.devops")

T = TypeVar("T")

BATCH_SIZE = 1000                      # the agent's batch, and the most docs/devops-protocol.md#adding-results recommends
MAX_ATTACHMENT_BYTES = 75 * 1024 ** 2  # the agent skips larger files (3.4)
ATTACHMENT_TYPE = "GeneralAttachment"


@dataclass(frozen=True)
class PublishOptions:
    run_name: str | None = None
    batch_size: int = BATCH_SIZE
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES
    attachment_workers: int = 4        # attachments are most of the calls: a few at once
    attach_notebooks: bool = True


@dataclass
class TestRunOutcome:
    run_id: int | None = None
    url: str | None = None
    state: str | None = None           # Completed, or Aborted when results could not all be added
    results: int = 0
    attachments: int = 0
    skipped_attachments: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    auth_refused: bool = False

    __test__ = False  # not a pytest class, despite the name

    @property
    def ok(self) -> bool:
        return self.state == "Completed" and not self.problems


def require_sdk() -> Any:
    """The SDK's test models; MissingExtraError (naming the pip command) when azure-devops is not installed.
    Call it before a run that will publish, so a missing extra fails before any notebook runs."""
    try:
        import azure.devops.v7_1.test.models as models
    except ImportError:
        raise MissingExtraError("azure-devops", "devops") from None
    return models


def _credentials(token: str, policy: RetryPolicy) -> Any:
    """msrest BasicAuthentication('', token) (docs/devops-protocol.md#test-client) whose sessions also classify every response and
    use our timeouts. The SDK signs each request's session through this object, including the ones
    Connection makes on its own to discover routes, so this is the one seam that covers all of them."""
    from msrest.authentication import BasicAuthentication

    class _GuardedBasicAuthentication(BasicAuthentication):
        def signed_session(self, session: Any = None) -> Any:
            return guard_session(super().signed_session(session), policy)

    return _GuardedBasicAuthentication("", token)


def open_test_client(context: DevOpsContext, policy: RetryPolicy = DEFAULT_POLICY) -> Any:
    """The v7_1 TestClient for the context's collection. Connection first reads `_apis/ResourceAreas` to find
    the test area's host, then each client reads its routes with OPTIONS `{url}/_apis` (docs/devops-protocol.md#python-sdk-coverage, docs/devops-protocol.md#test-client)."""
    require_sdk()
    from azure.devops.connection import Connection

    connection = Connection(base_url=context.collection_url, creds=_credentials(context.token.reveal(), policy))
    return call_with_retries(connection.clients_v7_1.get_test_client, policy, "resolve the test API's location")


def publish_test_run(run_dir: Path, context: DevOpsContext, *, policy: RetryPolicy = DEFAULT_POLICY,
                     options: PublishOptions = PublishOptions()) -> TestRunOutcome:
    """Publish RUN_DIR's results.json as a test run. Raises only for an unreadable run folder
    (InvalidInputError) or a missing azure-devops package (MissingExtraError)."""
    run = load_results(run_dir)
    require_sdk()
    outcome = TestRunOutcome()
    try:
        client = open_test_client(context, policy)
        _Publisher(client, context, run, run_dir, policy, options, outcome).publish()
    except DevOpsAuthError as exc:
        outcome.auth_refused = True
        outcome.problems.append(str(exc))
        log.error("devops test run not published: %s", exc)
    except DevOpsError as exc:
        outcome.problems.append(str(exc))
        log.error("devops test run not published: %s", exc)
    except Exception as exc:  # noqa: BLE001 - the SDK's own surprises (a cache file it cannot write,
        # an answer it cannot deserialise) must not fail the run either
        outcome.problems.append(f"test run not published: {type(exc).__name__}: {exc}")
        log.exception("devops test run not published")
    return outcome


class _Publisher:
    def __init__(self, client: Any, context: DevOpsContext, run: RunResults, run_dir: Path, policy: RetryPolicy,
                 options: PublishOptions, outcome: TestRunOutcome) -> None:
        self.client = client
        self.context = context
        self.run = run
        self.run_dir = run_dir
        self.policy = policy
        self.options = options
        self.outcome = outcome
        self.models = require_sdk()
        self._lock = threading.Lock()

    def _call(self, what: str, action: Callable[[], T]) -> T:
        return call_with_retries(action, self.policy, what)

    def publish(self) -> None:
        project = self.context.project
        created = self._call("create the test run",
                             lambda: self.client.create_test_run(self._run_model(), project))
        run_id = int(created.id)
        self.outcome.run_id = run_id
        self.outcome.url = getattr(created, "web_access_url", None) or getattr(created, "url", None)
        log.info("devops test run created id=%s build=%s", run_id, self.context.build_id)
        state, error = "Completed", None
        try:
            self._attach_all(run_id, self._add_results(run_id))
        except DevOpsError as exc:
            self._note(exc)
            if self.outcome.results < len(self.run.steps):
                state, error = "Aborted", str(exc)
        # A run left InProgress reads as still running forever: always try to close it, Aborted (with the
        # reason) when its results are not all in. After a refused token, one try only (it is terminal).
        self._complete(run_id, state, error)

    def _note(self, exc: DevOpsError) -> None:
        self.outcome.problems.append(str(exc))
        if isinstance(exc, DevOpsAuthError):
            self.outcome.auth_refused = True
        log.error("devops test run %s: %s", self.outcome.run_id, exc)

    # ---- the run ---------------------------------------------------------------------------------------

    def _run_model(self) -> Any:
        m, ctx, run = self.models, self.context, self.run
        name = self.options.run_name or " ".join(
            part for part in (run.title, ctx.build_number or "", f"({run.run_id})") if part)
        model = m.RunCreateModel(name=name, automated=True, state="InProgress",
                                 start_date=utc_iso(run.started) if run.started else None,
                                 comment=clip(run_comment(run, ctx), TEXT_LIMIT))
        if ctx.build_id:
            model.build = m.ShallowReference(id=str(ctx.build_id))
            if ctx.pipeline is not None and ctx.build_id.isdigit():
                # Must satisfy pipelineId == build.id (docs/devops-protocol.md#creating-a-test-run).
                p = ctx.pipeline
                model.pipeline_reference = m.PipelineReference(
                    pipeline_id=int(ctx.build_id),
                    stage_reference=m.StageReference(stage_name=p.stage_name, attempt=p.stage_attempt)
                    if p.stage_name else None,
                    phase_reference=m.PhaseReference(phase_name=p.phase_name, attempt=p.phase_attempt)
                    if p.phase_name else None,
                    job_reference=m.JobReference(job_name=p.job_name, attempt=p.job_attempt)
                    if p.job_name else None,
                )
        if ctx.release_uri:
            model.release_uri = ctx.release_uri
            model.release_environment_uri = ctx.release_environment_uri
        return model

    def _complete(self, run_id: int, state: str, error: str | None = None) -> None:
        finished = self.run.finished
        update = self.models.RunUpdateModel(state=state, completed_date=utc_iso(finished) if finished else utc_iso(),
                                            error_message=clip(error, TEXT_LIMIT) if error else None)
        policy = replace(self.policy, attempts=1) if self.outcome.auth_refused else self.policy
        try:
            call_with_retries(lambda: self.client.update_test_run(update, self.context.project, run_id),
                              policy, f"mark the test run {state}")
            self.outcome.state = state
        except DevOpsError as exc:
            self._note(exc)

    # ---- results ---------------------------------------------------------------------------------------

    def _add_results(self, run_id: int) -> dict[str, int]:
        """Add every step's result; return {step id: test result id} (for the attachments)."""
        steps = self.run.steps
        ids: dict[str, int] = {}
        size = max(1, min(self.options.batch_size, BATCH_SIZE))
        for start in range(0, len(steps), size):
            batch = steps[start:start + size]
            models = [self._result_model(step) for step in batch]
            added = self._call(f"add test results {start + 1}-{start + len(batch)}",
                               lambda: self.client.add_test_results_to_test_run(models, self.context.project, run_id))
            added = list(added or [])
            # The agent relies on the answer keeping the request's order (docs/devops-protocol.md#adding-results); check it by name.
            for step, model, result in zip(batch, models, added):
                if getattr(result, "automated_test_name", None) in (None, model.automated_test_name) and result.id:
                    ids[step.id] = int(result.id)
            self.outcome.results += len(added)
        log.info("devops test results added run=%s results=%d", run_id, self.outcome.results)
        return ids

    def _result_model(self, step: StepResult) -> Any:
        # PublishTestResults@2's names for junit.xml's testcase (report/junit.py test_identity), and its type:
        # the same test history whichever of the two publishes a run.
        identity = test_identity(step)
        model = self.models.TestCaseResult(
            automated_test_name=identity.name,
            automated_test_storage=identity.classname,
            automated_test_type="JUnit",
            test_case_title=identity.name,
            outcome=OUTCOMES.get(step.status, UNFINISHED_OUTCOME),
            state="Completed",
            duration_in_ms=round((step.duration_s or 0.0) * 1000.0, 3),
            computer_name=self.context.host_name,
            comment=clip(result_comment(step), TEXT_LIMIT),
        )
        # Completed must be later than started (3.3); skipped steps have neither.
        if step.started is not None and step.finished is not None and step.finished >= step.started:
            model.started_date, model.completed_date = step.started, step.finished
        message = error_message(step)
        if message:
            model.error_message = clip(message, TEXT_LIMIT)
        if step.error is not None and step.error.traceback:
            model.stack_trace = tail(step.error.traceback, TEXT_LIMIT)
        return model

    # ---- attachments -----------------------------------------------------------------------------------

    def _attach_all(self, run_id: int, result_ids: dict[str, int]) -> None:
        jobs: list[tuple[Path, int | None]] = []
        if self.options.attach_notebooks:
            for step in self.run.steps:
                ipynb = executed_notebook(self.run_dir, step.id, step.output_notebook)
                if ipynb is None or step.id not in result_ids:
                    continue
                jobs += [(path, result_ids[step.id]) for path in (ipynb, ipynb.with_suffix(".html")) if path.is_file()]
        jobs += [(self.run_dir / name, None) for name in ("junit.xml", "report.html")
                 if (self.run_dir / name).is_file()]
        stop = threading.Event()
        workers = max(1, self.options.attachment_workers)
        errors: list[DevOpsError] = []

        def one(job: tuple[Path, int | None]) -> None:
            if stop.is_set():
                return
            try:
                self._attach(run_id, *job)
            except (DevOpsAuthError, DevOpsUnavailableError) as exc:
                # The token is gone or the service is down: the remaining uploads would fail the same way.
                stop.set()
                with self._lock:
                    errors.append(exc)

        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                one(job)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="devops-attach") as pool:
                list(pool.map(one, jobs))
        for exc in errors[:1]:
            if isinstance(exc, DevOpsAuthError):
                raise exc
            self.outcome.problems.append(f"attachments stopped: {exc}")
            log.error("devops attachments stopped: %s", exc)
        log.info("devops attachments run=%s attached=%d skipped=%d", run_id, self.outcome.attachments,
                 len(self.outcome.skipped_attachments))

    def _attach(self, run_id: int, path: Path, result_id: int | None) -> None:
        shown = path.relative_to(self.run_dir).as_posix()
        size = path.stat().st_size
        if size > self.options.max_attachment_bytes:
            self._skip(f"{shown} ({size / 1024 ** 2:.1f} MB is over the {self.options.max_attachment_bytes / 1024 ** 2:.0f} MB limit)")
            return
        kind = "executed notebook" if path.suffix == ".ipynb" else "HTML rendering" if result_id else "run file"
        model = self.models.TestAttachmentRequestModel(
            stream=base64.b64encode(path.read_bytes()).decode("ascii"), file_name=attachment_name(path.name),
            attachment_type=ATTACHMENT_TYPE, comment=f"{kind}: {shown}")
        project = self.context.project
        try:
            if result_id is None:
                self._call(f"attach {shown} to the test run",
                           lambda: self.client.create_test_run_attachment(model, project, run_id))
            else:
                self._call(f"attach {shown} to its test result",
                           lambda: self.client.create_test_result_attachment(model, project, run_id, result_id))
        except (DevOpsAuthError, DevOpsUnavailableError):
            raise
        except DevOpsError as exc:  # this file refused (e.g. 400): the others may still go
            self._skip(f"{shown} ({exc})")
            return
        with self._lock:
            self.outcome.attachments += 1

    def _skip(self, text: str) -> None:
        log.warning("devops attachment skipped: %s", text)
        with self._lock:
            self.outcome.skipped_attachments.append(text)
