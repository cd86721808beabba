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
