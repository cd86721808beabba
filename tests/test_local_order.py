"""Longest chain first: the ranks of ready notebooks, slots granted by rank, and a real run that uses them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator.backends.priority import ranks
from orchestrator.history import HistoryStore, remember_run
from orchestrator.backends.slots import RankedSlots
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from tests.builders import make_notebook
from tests.cli_helpers import by_notebook, orchestrator_env, read_results, run_cli
from tests.history_builders import FakeStep, fake_run


def _plan(*steps: tuple[str, tuple[str, ...]]) -> ResolvedPlan:
    specs = tuple(StepSpec(id=name, notebook=f"{name}.ipynb", target="cpu", environment="default", kernel="python3",
                           timeout_s=None, cell_timeout_s=None, retries=0, after=after) for name, after in steps)
    return ResolvedPlan(root=Path("/repo"), plan_file=None, experiment="x", steps=specs, targets={}, environments={})


def test_the_head_of_the_longest_chain_ranks_first_and_unknowns_count_as_typical() -> None:
    plan = _plan(("short", ()), ("head", ()), ("long", ()), ("tail", ("head",)), ("unknown", ()))
    plan_ranks = ranks(plan, {"short": 1, "head": 2, "long": 5, "tail": 4})
    order = sorted(plan_ranks, key=plan_ranks.__getitem__)
    # head (2 + 4 after it) before long (5); unknown counts as the median (3) and goes before short.
    assert order == ["head", "long", "tail", "unknown", "short"]


def test_without_any_duration_the_plan_order_stays() -> None:
    plan = _plan(("b", ()), ("a", ()), ("c", ("a",)))
    plan_ranks = ranks(plan, {})
    assert sorted(plan_ranks, key=plan_ranks.__getitem__) == ["b", "a", "c"]


def test_a_free_slot_goes_to_the_best_ranked_waiter_not_the_first_to_ask() -> None:
    async def scenario() -> list[int]:
        slots = RankedSlots(1)
        granted: list[int] = []

        async def worker(rank: int) -> None:
            await slots.acquire(rank)
            granted.append(rank)
            await asyncio.sleep(0)
            slots.release()

        cancelled = asyncio.ensure_future(slots.acquire(-1))  # the best rank, but it gives up
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(*(worker(rank) for rank in (5, 3, 9, 1)), return_exceptions=True)
        return granted

    assert asyncio.run(scenario()) == [1, 3, 5, 9]


def test_a_local_run_starts_the_notebook_history_says_is_longest_first(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        make_notebook(repo / f"{name}.ipynb", "x = 1")
    history = tmp_path / "h.sqlite"
    env = orchestrator_env(ORCHESTRATOR_HISTORY=str(history))
    # Earlier runs measured c as the longest and a as the shortest; plan order is a, b, c.
    past = fake_run(tmp_path / "past", run_id="past", started_at="2026-01-01T00:00:00Z", root=repo.resolve(),
                    steps=[FakeStep("a.ipynb", duration_s=1), FakeStep("b.ipynb", duration_s=5),
                           FakeStep("c.ipynb", duration_s=50)])
    store = HistoryStore(history)
    assert remember_run(past, store) is None
    out = tmp_path / "run"
    done = run_cli("run", repo, "--out", out, "--jobs", "1", env=env)
    assert done.returncode == 0, done.stderr
    steps = by_notebook(read_results(out))
    started = sorted(steps, key=lambda notebook: steps[notebook]["started_at"])
    assert started == ["c.ipynb", "b.ipynb", "a.ipynb"]
    # ... and the run itself joined the history.
    latest = store.notebook_history(root=str(repo.resolve()), last=1)
    assert {runs[0].run_id for runs in latest.values()} == {read_results(out)["run_id"]}


def test_expected_duration_and_pack_are_plan_settings_merged_like_the_others(tmp_path: Path) -> None:
    from orchestrator.errors import PlanError
    from orchestrator.plan import load_plan

    make_notebook(tmp_path / "a.ipynb", "x = 1", metadata={"orchestrator": {"expected_duration": "90s"}})
    make_notebook(tmp_path / "b.ipynb", "x = 1")
    (tmp_path / "orchestrator.yml").write_text(
        "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n    pack: false\n  - path: b.ipynb\n    expected_duration: 1h30m\n"
        "    pack: true\n", encoding="utf-8")
    steps = {step.notebook: step for step in load_plan(tmp_path).steps}
    assert (steps["a.ipynb"].expected_duration_s, steps["a.ipynb"].pack) == (90.0, False)
    assert (steps["b.ipynb"].expected_duration_s, steps["b.ipynb"].pack) == (5400.0, True)
    (tmp_path / "orchestrator.yml").write_text("version: 1\nnotebooks:\n  - path: b.ipynb\n    expected_duration: soon\n"
                                               "    pack: 'no'\n", encoding="utf-8")
    try:
        load_plan(tmp_path)
    except PlanError as error:
        problems = [str(p) for p in error.problems]
    assert any("notebooks[0].expected_duration" in p and "expected a duration" in p for p in problems), problems
    assert any("notebooks[0].pack" in p for p in problems), problems


def test_time_left_counts_waiting_and_running_work_over_the_slots_and_shows_in_the_live_view() -> None:
    import io

    from rich.console import Console

    from orchestrator.progress import LiveProgress, TimeLeft

    left = TimeLeft({"a": 100.0, "b": 40.0, "c": 20.0}, slots=2)
    left.planned(4)  # d is unknown: counts as the median, 40
    assert left.estimate({}, now=0.0) == (100 + 40 + 20 + 40) / 2
    # a has run 30 of its 100 s; b is done: 70 left on a, while c and d (60) share the other slot.
    left.finished("b")
    assert left.estimate({"a": 0.0}, now=30.0) == 70.0
    assert TimeLeft({}, slots=4).estimate({}, now=0.0) is None

    live = LiveProgress(io.StringIO(), expected={"a": 125.0}, slots=1)
    live._total = 1
    console = Console(file=io.StringIO(), width=100, color_system=None)
    with console.capture() as capture:
        console.print(live.render())
    assert "~2m05s left" in capture.get()
