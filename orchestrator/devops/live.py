"""While a run is in progress: its events as live feed lines on the waiting server job, and a watcher that
notices when DevOps has cancelled (or timed out) that job.

Both work from background threads, so a slow or failing DevOps never slows the notebooks, and both stop
for good, with one clear log line, when DevOps refuses the token (docs/devops-protocol.md#timeouts-token-lifetime-cancellation, docs/devops-protocol.md#pitfalls): a stale
callback must never fail the run itself (docs/architecture.md#ways-in).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import DevOpsAuthError, DevOpsError, RetryPolicy, utc_iso
from orchestrator.devops.taskclient import TaskClient
from orchestrator.progress import PlainProgress
from steps.step_result import StepResult

log = logging.getLogger("orchestrator.devops")

# The feed is a live view only (2.4): a few quick tries, then the lines are dropped, never the run delayed.
FEED_POLICY = RetryPolicy(attempts=3, backoff_s=1.0, max_backoff_s=5.0, budget_s=20.0, read_timeout_s=20.0)
WATCH_POLICY = RetryPolicy(attempts=2, backoff_s=2.0, budget_s=20.0, read_timeout_s=30.0)
# Lines waiting for the next post beyond this are dropped (oldest first) and counted in one line instead.
MAX_PENDING_LINES = 5000
# Timeline records have no single-record GET; crank caches them 60 s to avoid throttling (2.3).
WATCH_INTERVAL_S = 60.0


class LiveReporter:
    """A `Progress` (orchestrator.progress) that posts the run's events to the server job's console feed.

    At most one post per `interval_s` (the throttle), at most 100 lines of at most 1024 characters per post
    (TaskClient.post_feed). Sends TaskStarted first when `task_started` is true. With no server task in the
    context (an agent job, whose console already shows our output) it does nothing.
    """

    def __init__(self, context: DevOpsContext, *, interval_s: float = 2.0, task_started: bool = True,
                 policy: RetryPolicy = FEED_POLICY, client: TaskClient | None = None) -> None:
        self.active = context.task is not None
        self._client = client if client is not None or not self.active else TaskClient(context, policy)
        self._interval = interval_s
        self._send_started = task_started
        self._format = PlainProgress.to_lines(self._enqueue)  # the same words as the CI log
        self._pending: list[str] = []
        self._dropped = 0
        self._cond = threading.Condition()
        self._closing = False
        self._disabled = False
        self._thread: threading.Thread | None = None
        self.posted_lines = 0

    # ---- Progress ----------------------------------------------------------------------------------------

    def run_started(self, run_id: str, total: int, run_dir: str) -> None:
        self._ensure_thread()
        self._format.run_started(run_id, total, run_dir)

    def step_started(self, step_id: str, notebook: str, attempt: int) -> None:
        self._format.step_started(step_id, notebook, attempt)

    def step_finished(self, result: StepResult) -> None:
        self._format.step_finished(result)

    def message(self, text: str) -> None:
        self._format.message(text)

    def run_finished(self, status: str, counts: dict[str, int], seconds: float) -> None:
        self._format.run_finished(status, counts, seconds)
        self.close()

    # ---- lifecycle -----------------------------------------------------------------------------------

    def close(self, timeout_s: float | None = None) -> None:
        """Post what is pending and stop the thread (waits at most the feed policy's budget)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else FEED_POLICY.budget_s + 5.0)

    def _ensure_thread(self) -> None:
        if not self.active or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="devops-feed", daemon=True)
        self._thread.start()

    def _enqueue(self, line: str) -> None:
        if not self.active or self._disabled:
            return
        self._ensure_thread()
        with self._cond:
            self._pending.append(f"{utc_iso()} {line}")
            if len(self._pending) > MAX_PENDING_LINES:
                overflow = len(self._pending) - MAX_PENDING_LINES
                del self._pending[:overflow]
                self._dropped += overflow
            self._cond.notify_all()

    def _loop(self) -> None:
        assert self._client is not None
        if self._send_started:
            self._guarded(self._client.task_started, "TaskStarted")
        last_post = 0.0
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._closing:
                    # Throttle: gather lines until interval_s has passed since the last post.
                    remaining = last_post + self._interval - time.monotonic()
                    while remaining > 0 and not self._closing:
                        self._cond.wait(remaining)
                        remaining = last_post + self._interval - time.monotonic()
                batch, self._pending = self._pending, []
                dropped, self._dropped = self._dropped, 0
                closing = self._closing
            if dropped:
                batch.insert(0, f"{utc_iso()} [{dropped} earlier lines dropped: the feed could not keep up]")
            if batch and not self._disabled:
                last_post = time.monotonic()
                if self._guarded(lambda: self._client.post_feed(batch), "live feed"):  # type: ignore[union-attr]
                    self.posted_lines += len(batch)
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _guarded(self, action: Callable[[], None], what: str) -> bool:
        try:
            action()
            return True
        except DevOpsAuthError as exc:
            self._disabled = True
            log.error("devops %s stopped for this run: %s", what, exc)
        except DevOpsError as exc:
            log.warning("devops %s lines dropped: %s", what, exc)
        except Exception:  # noqa: BLE001 - the feed is best effort; its thread must live on
            log.exception("devops %s failed", what)
        return False


class CancellationWatcher:
    """Polls the server task's timeline record (at most once per `interval_s`, 60 s by default) and calls
    `on_cancel(reason)` once when DevOps shows the task or its job completed: the job was cancelled or timed
    out, and nothing will read our results (the task has no Cancel section, so nobody tells us; 2.3).

    `on_cancel` is the backend's stop (local: cancel every kernel and record why; Azure ML: cancel the job).
    A refused token stops the watching, not the run. With no server task, start() does nothing.
    """

    def __init__(self, context: DevOpsContext, on_cancel: Callable[[str], None], *,
                 interval_s: float = WATCH_INTERVAL_S, policy: RetryPolicy = WATCH_POLICY,
                 client: TaskClient | None = None) -> None:
        self.active = context.task is not None
        self._client = client if client is not None or not self.active else TaskClient(context, policy)
        self._on_cancel = on_cancel
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def start(self) -> CancellationWatcher:
        if not self.active:
            log.debug("devops cancellation watcher: no server task to watch")
            return self
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="devops-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def __enter__(self) -> CancellationWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        assert self._client is not None
        while not self._stop.is_set():
            try:
                state = self._client.state()
            except DevOpsAuthError as exc:
                log.warning("devops cancellation watcher stopped, the run goes on: %s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - DevOpsError or a surprise: try again next time
                log.warning("devops cancellation check failed, will try again: %s", exc)
            else:
                if state.task_completed or state.job_completed:
                    self.reason = f"stopped because {state.describe()}: the job was cancelled or timed out"
                    log.warning("devops %s", self.reason)
                    try:
                        self._on_cancel(self.reason)
                    except Exception:  # noqa: BLE001 - a broken callback must not kill the thread silently
                        log.exception("devops cancellation callback failed")
                    return
            self._stop.wait(self._interval)
