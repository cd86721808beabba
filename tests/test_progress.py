"""Progress: the live view a person sees on a terminal, and the plain lines a CI log gets."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.progress import LiveProgress, PlainProgress, TeeProgress
from steps.step_result import StepResult


def _text(progress: LiveProgress) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    with console.capture() as capture:
        console.print(progress.render())
    return capture.get()


def test_live_view_shows_counts_running_notebooks_with_elapsed_time_and_recent_problems() -> None:
    live = LiveProgress(io.StringIO())
    live._total = 3  # run_started would also start the refresh thread; the view is what is tested here
    live.step_started("a", "models/a.ipynb", 1)
    live.step_started("b", "models/b.ipynb", 2)
    live.step_finished(StepResult.from_json({"step": "a", "notebook": "models/a.ipynb", "status": "failed",
                        "error": {"ename": "ValueError", "evalue": "bad [markup] value"}}))
    text = _text(live)
    assert "1/3 done" in text and "running=1" in text and "failed=1" in text
    assert "models/b.ipynb (attempt 2)" in text and "s" in text.split("models/b.ipynb")[1]
    assert "ValueError: bad [markup] value" in text  # escaped, not eaten as rich markup
    assert "models/a.ipynb" in text.split("ValueError")[0]


def test_live_view_prints_every_problem_once_when_the_run_ends() -> None:
    stream = io.StringIO()
    live = LiveProgress(stream)
    live.run_started("r1", 2, "/tmp/run")
    live.step_started("a", "a.ipynb", 1)
    live.step_finished(StepResult.from_json({"step": "a", "notebook": "a.ipynb", "status": "skipped", "reason": "no GPU on this machine"}))
    live.step_finished(StepResult.from_json({"step": "b", "notebook": "b.ipynb", "status": "passed"}))
    live.run_finished("passed", {"passed": 1, "skipped": 1}, 1.5)
    output = stream.getvalue()
    assert output.count("no GPU on this machine") == 1
    assert "run passed" in output and "passed=1 skipped=1" in output


def test_plain_lines_and_tee() -> None:
    first, second = io.StringIO(), io.StringIO()
    tee = TeeProgress(PlainProgress(first), PlainProgress(second))
    tee.run_started("r1", 1, "/tmp/run")
    tee.step_started("nb", "nb.ipynb", 1)
    tee.step_finished(StepResult.from_json({"step": "nb", "notebook": "nb.ipynb", "status": "timed_out", "duration_s": 3.04,
                       "error": {"kind": "timeout", "cell_index": 2, "ename": "TimeoutError", "evalue": "too slow"}}))
    tee.run_finished("failed", {"timed_out": 1}, 3.2)
    for stream in (first, second):
        lines = stream.getvalue().splitlines()
        assert lines[0] == "run=r1 steps=1 folder=/tmp/run"
        assert lines[1] == "step=nb status=running notebook=nb.ipynb"
        assert lines[2] == "step=nb status=timed_out secs=3.0 cell=2 error='TimeoutError: too slow'"
        assert lines[3] == "run status=failed secs=3.2 timed_out=1"


def test_a_message_outside_a_live_view_is_printed_at_once() -> None:
    # `run --backend azureml --no-wait` on a terminal: the job name and studio URL are all there is to show.
    stream = io.StringIO()
    LiveProgress(stream).message("Azure ML job nb-123: https://ml.azure.com/runs/nb-123")
    assert "Azure ML job nb-123: https://ml.azure.com/runs/nb-123" in stream.getvalue()
