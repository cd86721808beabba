"""Run folders stay true and safe: locked while a run writes them, reused only when this tool wrote them, and
a run whose process is gone is settled (never "running" forever, never green with steps missing). Fake run
folders and a fake step runner: the kernel is not the point here."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends import RunOptions
from orchestrator.backends.local import LocalBackend
from orchestrator.errors import InvalidInputError
from orchestrator.plan import load_plan
from orchestrator.progress import PlainProgress
from orchestrator.report import build_report
from orchestrator.rerun import plan_repair
from orchestrator.results import RunRecord
from orchestrator.run_folder import prepare_run_dir, release_run_dir
from steps import run_notebook
from steps.step_result import StepResult
from tests.builders import make_notebook
from tests.report_builders import step_result, write_run

MARKER = ".orchestrator-run"


# ------------------------------------------------------------------------------------------ the lock, reuse


def test_a_folder_this_tool_did_not_write_is_never_emptied(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "steps").mkdir(parents=True)
    (project / "steps" / "important.py").write_text("keep me")
    (project / "results.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="is not a run folder this tool wrote"):
        prepare_run_dir(project, "r1")
    assert (project / "steps" / "important.py").read_text() == "keep me"


def test_a_folder_locked_by_a_live_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / MARKER).write_text(json.dumps({"pid": 4242, "host": "box", "run_id": "r0", "since": "then"}))
    (run_dir / "results.json").write_text("{}")
    holder = os.open(run_dir / MARKER, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another open file: as good as another process
    try:
        with pytest.raises(InvalidInputError) as caught:
            prepare_run_dir(run_dir, "r1")
    finally:
        os.close(holder)
    assert "another run is writing this folder (run r0, process 4242 on box since then)" in str(caught.value)
    assert (run_dir / "results.json").exists()  # nothing of the live run was touched


def test_a_run_folder_of_ours_is_reused_and_relocked(tmp_path: Path) -> None:
    run_dir = prepare_run_dir(tmp_path / "run", "r1")
    (run_dir / "results.json").write_text("{}")
    (run_dir / "notes.txt").write_text("mine")
    release_run_dir(run_dir)
    assert prepare_run_dir(run_dir, "r2") == run_dir
    assert not (run_dir / "results.json").exists() and (run_dir / "notes.txt").exists()
    assert json.loads((run_dir / MARKER).read_text())["run_id"] == "r2"
    release_run_dir(run_dir)


def test_a_marker_replaced_by_a_link_never_lets_a_run_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / MARKER).symlink_to(victim)
    with pytest.raises(InvalidInputError, match="is not a run folder this tool wrote"):
        prepare_run_dir(run_dir, "r1")
    assert victim.read_text() == "precious"


def test_an_unwritable_out_is_a_clear_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="cannot write the run folder there"):
        prepare_run_dir(tmp_path / "file" / "run", "r1")


def test_results_and_plan_files_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        RunRecord(tmp_path, run_id="r", backend="local", experiment="x", step_order=[])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o640


# --------------------------------------------------------------------------------------------- a dead run


def _dead_run(tmp_path: Path, steps: list[dict[str, Any]]) -> tuple[Path, Path]:
    """A run folder as a SIGKILL leaves it: marker unlocked, results.json "running", plan.json with 3 steps."""
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        make_notebook(repo / f"{name}.ipynb", "x = 1")
    plan = load_plan(repo)
    (tmp_path / "run").mkdir()
    run_dir = write_run(tmp_path / "run", steps, status="running", finished_at=None)
    (run_dir / "plan.json").write_text(json.dumps(plan.to_json()))
    (run_dir / MARKER).write_text(json.dumps({"pid": 99999, "host": "box", "run_id": "r0"}))
    return repo, run_dir


def test_report_settles_a_dead_run_every_unfinished_step_interrupted_never_green(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [step_result("a.ipynb", "passed")])
    (run_dir / "steps" / "b").mkdir()  # b had started: its folder exists, it wrote no result
    build_report(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and "process 99999 on box" in results["interrupted_by"]
    steps = {s["step"]: s for s in results["steps"]}
    assert steps["a"]["status"] == "passed"
    assert steps["b"]["status"] == steps["c"]["status"] == "error"
    assert "ended while this step was running" in steps["b"]["error"]["evalue"]
    assert "ended before this step started" in steps["c"]["error"]["evalue"]
    junit = (run_dir / "junit.xml").read_text()
    assert 'tests="3"' in junit and 'errors="2"' in junit
    assert "still going" not in (run_dir / "report.html").read_text()


def test_a_dead_azure_ml_follower_says_the_job_may_have_gone_on(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [])
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "backend": "azureml"}))
    build_report(run_dir)
    step = json.loads((run_dir / "results.json").read_text())["steps"][0]
    assert "the Azure ML job itself may have gone on" in step["error"]["evalue"]


def test_a_dead_run_where_no_step_finished_is_reported_not_a_crash(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [])
    build_report(run_dir)
    assert 'tests="3"' in (run_dir / "junit.xml").read_text()


def test_a_result_the_step_wrote_before_the_process_died_is_kept(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [])
    (run_dir / "steps" / "a").mkdir(parents=True)
    (run_dir / "steps" / "a" / "result.json").write_text(json.dumps(step_result("a.ipynb", "failed")))
    build_report(run_dir)
    steps = {s["step"]: s for s in json.loads((run_dir / "results.json").read_text())["steps"]}
    assert steps["a"]["status"] == "failed"


def test_a_live_run_is_left_alone_by_report(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [step_result("a.ipynb", "passed")])
    holder = os.open(run_dir / MARKER, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        build_report(run_dir)
        with pytest.raises(InvalidInputError, match="the run is still going"):
            plan_repair(run_dir, failed_only=True)
    finally:
        os.close(holder)
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running"
    assert "still going" in (run_dir / "report.html").read_text()
    junit = (run_dir / "junit.xml").read_text()  # the steps not finished yet are there, as not finished
    assert 'tests="3"' in junit and 'errors="2"' in junit and 'message="did not finish (status: pending)"' in junit


def test_rerun_failed_completes_a_dead_run(tmp_path: Path) -> None:
    _, run_dir = _dead_run(tmp_path, [step_result("a.ipynb", "passed")])
    repair = plan_repair(run_dir, failed_only=True)
    assert repair.rerun == ("b", "c") and set(repair.carried) == {"a"}


def test_a_report_with_infinite_durations_is_built(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, [step_result("a.ipynb", "passed")], notebooks=False)
    (run_dir / "results.json").write_text((run_dir / "results.json").read_text().replace('"duration_s": 10.0',
                                                                                        '"duration_s": Infinity'))
    build_report(run_dir)  # the duration is taken from the start and end times instead
    junit = (run_dir / "junit.xml").read_text()
    assert '<testcase classname="notebooks" name="a.ipynb" time="10.000"' in junit and "inf" not in junit


# ----------------------------------------------------------------------------------------------- signals


def _fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: Any) -> tuple[Any, Path]:
    repo = tmp_path / "repo"
    make_notebook(repo / "a.ipynb", "x = 1")
    monkeypatch.setattr(run_notebook, "run_step", step)
    run_dir = prepare_run_dir(tmp_path / "run", "r1")
    outcome = LocalBackend().run(load_plan(repo), RunOptions(run_dir=run_dir, run_id="r1"), PlainProgress(io.StringIO()))
    release_run_dir(run_dir)
    return outcome, run_dir


def test_sighup_stops_the_run_like_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs_up(request: run_notebook.StepRequest) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal closed
        await asyncio.sleep(30)
        raise AssertionError("not stopped")

    def unhandled(*_: Any) -> None:
        raise AssertionError("SIGHUP was not handled by the run")

    previous = signal.signal(signal.SIGHUP, unhandled)
    try:
        outcome, run_dir = _fake_run(tmp_path, monkeypatch, hangs_up)
    finally:
        signal.signal(signal.SIGHUP, previous)
    results = json.loads((run_dir / "results.json").read_text())
    assert outcome.status == results["status"] == "interrupted" and results["interrupted_by"] == "SIGHUP"


def test_a_second_ctrl_c_while_the_record_is_written_still_finishes_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def passes(request: run_notebook.StepRequest) -> StepResult:
        return run_notebook.skipped_result(request, "fake").but(status="passed")

    finish = RunRecord.finish

    def ctrl_c_then_finish(self: RunRecord, **kwargs: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        return finish(self, **kwargs)

    monkeypatch.setattr(RunRecord, "finish", ctrl_c_then_finish)
    outcome, run_dir = _fake_run(tmp_path, monkeypatch, passes)
    assert json.loads((run_dir / "results.json").read_text())["status"] == outcome.status == "passed"


def test_a_step_folder_replaced_by_a_file_still_leaves_a_finished_record(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def replaces_its_folder(request: run_notebook.StepRequest) -> StepResult:
        Path(request.output_dir).mkdir(parents=True, exist_ok=True)
        os.rmdir(request.output_dir)
        Path(request.output_dir).write_text("not a folder")
        raise FileExistsError(17, "File exists", str(request.output_dir))

    outcome, run_dir = _fake_run(tmp_path, monkeypatch, replaces_its_folder)
    results = json.loads((run_dir / "results.json").read_text())
    assert outcome.status == results["status"] == "failed"
    assert results["steps"][0]["status"] == "error" and results["steps"][0]["error"]["ename"] == "FileExistsError"


# ------------------------------------------------------------------------------- plan.json read back by rerun


def _rewritten_plan(tmp_path: Path, edit: Any) -> Path:
    _, run_dir = _dead_run(tmp_path, [step_result("a.ipynb", "failed")])
    data = json.loads((run_dir / "plan.json").read_text())
    edit(data)
    (run_dir / "plan.json").write_text(json.dumps(data))
    return run_dir


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["steps"][0].update(notebook="../../outside.ipynb"),
     "steps[0].notebook: expected a path inside the plan folder, got '../../outside.ipynb', which leads out of it"),
    (lambda d: d["steps"][0].update(after=["c"]),
     "steps[0].after: 'c' is not a step that comes before 'a' (unknown, later, or a cycle)"),
    (lambda d: d["steps"][2].update(after=["nope"]),
     "steps[2].after: 'nope' is not a step that comes before 'c' (unknown, later, or a cycle)"),
    (lambda d: d["steps"][1].update(id="../../x"), "steps[1].id: expected a step id (letters, digits, _), got '../../x'"),
    (lambda d: d["steps"][1].update(retries=10**20), "steps[1].retries: Input should be less than or equal to 10"),
    (lambda d: d["steps"][1].update(parameters={"not a name": 1}),
     "steps[1].parameters: expected parameter names that are Python identifiers, got 'not a name'"),
    (lambda d: d.update(schema=2), "schema: Input should be 1"),
])
def test_rerun_refuses_a_plan_json_a_notebook_rewrote(tmp_path: Path, edit: Any, expected: str) -> None:
    run_dir = _rewritten_plan(tmp_path, edit)
    with pytest.raises(InvalidInputError) as caught:
        plan_repair(run_dir, failed_only=True)
    assert [p.location + ": " + p.message for p in caught.value.problems] == [expected]


def test_rerun_refuses_a_notebook_link_leading_out_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.ipynb").write_text("{}")
    run_dir = _rewritten_plan(tmp_path, lambda d: d["steps"][0].update(notebook="linked.ipynb"))
    (tmp_path / "repo" / "linked.ipynb").symlink_to(tmp_path / "elsewhere.ipynb")
    with pytest.raises(InvalidInputError, match="steps\\[0\\].notebook: 'linked.ipynb': it leads through a symbolic link"):
        plan_repair(run_dir, failed_only=True)


def test_a_runner_failure_is_one_log_line_not_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notebook = make_notebook(tmp_path / "a.ipynb", "x = 1")
    (tmp_path / "out").write_text("a file where the step folder should be")
    request = run_notebook.StepRequest(notebook_path=notebook, output_dir=tmp_path / "out")
    with caplog.at_level("WARNING"), pytest.raises(OSError):
        asyncio.run(run_notebook.run_step(request))
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert errors and all(record.exc_info is None for record in errors)
    assert "runner failure: FileExistsError" in errors[0].getMessage()
