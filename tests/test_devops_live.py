"""While a run goes on: the live feed (TaskStarted, throttled posts within the limits) and the cancellation
watcher, against the strict server."""

from __future__ import annotations

import threading
import time

from orchestrator.devops.live import WATCH_INTERVAL_S, CancellationWatcher, LiveReporter
from orchestrator.progress import Progress
from tests.conftest_devops import FAST, server_context
from tests.devops_server import DevOpsServer
from steps.step_result import StepResult


def _wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _feed_lines(server: DevOpsServer) -> list[str]:
    return [line for call in server.calls("feed") for line in call.json["value"]]


def _drive(reporter: Progress, notebooks: int) -> None:
    reporter.run_started("run-1", notebooks, "/tmp/run-1")
    for i in range(notebooks):
        reporter.step_started(f"nb{i}", f"nb{i}.ipynb", 1)
        reporter.step_finished(StepResult.from_json({"step": f"nb{i}", "status": "passed", "duration_s": 1.0}))
    reporter.run_finished("passed", {"passed": notebooks}, 3.0)


def test_events_become_feed_lines_after_task_started(devops_server: DevOpsServer) -> None:
    s = devops_server
    reporter = LiveReporter(server_context(s), interval_s=0.01, policy=FAST)
    _drive(reporter, 2)
    assert [e["name"] for e in s.events] == ["TaskStarted"]
    lines = _feed_lines(s)
    assert len(lines) == 6 and lines[0].endswith("run=run-1 steps=2 folder=/tmp/run-1")
    assert lines[0][:4].isdigit() and "Z step=nb0 status=running" in lines[1]
    assert "run status=passed" in lines[-1]
    feed = s.calls("feed")[0]
    assert feed.json["stepId"] == s.task_id and feed.path.endswith(f"/records/{s.job_id}/feed")


def test_posts_stay_within_100_lines_of_1024_characters_and_are_throttled(devops_server: DevOpsServer) -> None:
    s = devops_server
    reporter = LiveReporter(server_context(s), interval_s=0.3, task_started=False, policy=FAST)
    reporter.run_started("run-1", 250, "/tmp")
    for i in range(250):
        reporter.message(f"line {i} " + "x" * 2000)
    reporter.run_finished("passed", {"passed": 250}, 1.0)
    posts = s.calls("feed")
    assert all(len(p.json["value"]) <= 100 for p in posts) and len(_feed_lines(s)) == 252
    assert all(len(line) <= 1024 for line in _feed_lines(s))
    assert len(posts) <= 6  # 252 lines gathered into few posts, not one post per line


def test_a_refused_token_stops_the_feed_and_the_run_goes_on(devops_server: DevOpsServer) -> None:
    s = devops_server
    s.fail("feed", 401)
    reporter = LiveReporter(server_context(s), interval_s=0.01, task_started=False, policy=FAST)
    reporter.run_started("run-1", 1, "/tmp")
    assert _wait_for(lambda: len(s.attempts("feed")) == 1)
    time.sleep(0.05)
    _drive(reporter, 3)
    assert len(s.attempts("feed")) == 1 and reporter.posted_lines == 0


def test_without_a_server_task_nothing_is_sent(devops_server: DevOpsServer) -> None:
    reporter = LiveReporter(server_context(devops_server).without_task(), interval_s=0.01)
    _drive(reporter, 2)
    assert devops_server.requests == []


def test_the_watcher_calls_on_cancel_once_when_devops_cancels_the_job(devops_server: DevOpsServer) -> None:
    reasons: list[str] = []
    called = threading.Event()

    def on_cancel(reason: str) -> None:
        reasons.append(reason)
        called.set()

    watcher = CancellationWatcher(server_context(devops_server), on_cancel, interval_s=0.05, policy=FAST).start()
    try:
        assert _wait_for(lambda: len(devops_server.calls("records.get")) >= 2)
        assert not called.is_set()
        devops_server.cancel_job()
        assert called.wait(5)
    finally:
        watcher.stop()
    polls = len(devops_server.calls("records.get"))
    time.sleep(0.15)
    assert len(devops_server.calls("records.get")) == polls  # stopped polling after cancelling
    assert len(reasons) == 1 and "result=canceled" in reasons[0] and watcher.cancelled


def test_the_watcher_polls_at_most_once_a_minute_by_default(devops_server: DevOpsServer) -> None:
    assert WATCH_INTERVAL_S >= 60
    with CancellationWatcher(server_context(devops_server), lambda reason: None, policy=FAST):
        assert _wait_for(lambda: len(devops_server.calls("records.get")) == 1)
        time.sleep(0.2)
    assert len(devops_server.calls("records.get")) == 1


def test_a_refused_token_stops_the_watcher_not_the_run(devops_server: DevOpsServer) -> None:
    cancelled: list[str] = []
    devops_server.fail("records.get", 401)
    watcher = CancellationWatcher(server_context(devops_server), cancelled.append, interval_s=0.01, policy=FAST)
    watcher.start()
    assert _wait_for(lambda: len(devops_server.attempts("records.get")) == 1)
    time.sleep(0.1)
    watcher.stop()
    assert cancelled == [] and len(devops_server.attempts("records.get")) == 1


def test_a_transient_failure_is_polled_through(devops_server: DevOpsServer) -> None:
    cancelled = threading.Event()
    devops_server.fail("records.get", 500, times=FAST.attempts)  # one whole poll fails
    devops_server.cancel_job()
    with CancellationWatcher(server_context(devops_server), lambda r: cancelled.set(), interval_s=0.01, policy=FAST):
        assert cancelled.wait(5)


def test_without_a_server_task_the_watcher_does_nothing(devops_server: DevOpsServer) -> None:
    with CancellationWatcher(server_context(devops_server).without_task(), lambda r: None, interval_s=0.01):
        time.sleep(0.05)
    assert devops_server.requests == []
