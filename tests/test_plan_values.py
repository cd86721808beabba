"""The small languages inside a plan: durations, sizes, expectation rules, globs, step ids."""

from __future__ import annotations

import pytest

from orchestrator.plan.durations import parse_duration, parse_size
from orchestrator.plan.graph import CycleError, execution_order, slug, step_ids, with_prerequisites
from orchestrator.plan.paths import glob_match, inside_root
from orchestrator.plan.rules import check_rule


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0),
     ("1d", 86400.0), ("1.5h", 5400.0), (" 2H 5M ", 7500.0), ("1m30s", 90.0)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "30m1h", "1m1m", "-5", 0, -1, True, None, [], "1 hour", float("inf")])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="expected a"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [(100, 100), ("2MB", 2_000_000), ("500kB", 500_000), ("1.5 GB", 1_500_000_000), ("1MiB", 1_048_576),
     ("64B", 64), ("10", 10)],
)  # fmt: skip
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["lots", "2 potatoes", "2k", 0, -5, True, "MB"])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="expected a"):
        parse_size(value)


@pytest.mark.parametrize(
    "rule", [">= 0.9", "<5", "== 1", "!= 0", "> -1e-3", "0.8..1.0", "0.8 .. 1", "~= 0.5 +- 0.01", "~=0.5±0.01"]
)
def test_rules(rule: str) -> None:
    assert check_rule(rule) == rule.strip()


@pytest.mark.parametrize("rule", [">> 1", "0.9", "=> 1", "1..0", "~= 1 +- -1", "< x", "", 0.9, None, "0.8...1"])
def test_bad_rules(rule: object) -> None:
    with pytest.raises(ValueError, match="expected a"):
        check_rule(rule)


NOTEBOOKS = ["a.ipynb", "ex/00.ipynb", "ex/sub/01.ipynb", "ex/scratch/x.ipynb", "ex/scratch/deep/y.ipynb"]


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("ex/**/*.ipynb", ["ex/00.ipynb", "ex/sub/01.ipynb", "ex/scratch/x.ipynb", "ex/scratch/deep/y.ipynb"]),
        ("ex/*.ipynb", ["ex/00.ipynb"]),
        ("ex/*", ["ex/00.ipynb"]),  # a wildcard last part: direct children only, as in pathlib
        ("ex/scratch/**", ["ex/scratch/x.ipynb", "ex/scratch/deep/y.ipynb"]),
        ("ex/scratch", ["ex/scratch/x.ipynb", "ex/scratch/deep/y.ipynb"]),  # a folder covers what is below it
        ("**/*.ipynb", NOTEBOOKS),
        ("*.ipynb", ["a.ipynb"]),
        ("ex/??.ipynb", ["ex/00.ipynb"]),
        ("ex/[!s]*/*.ipynb", []),
        ("ex/[a-s]ub/*.ipynb", ["ex/sub/01.ipynb"]),
        ("ex/sc", []),
    ],
)
def test_globs(pattern: str, matches: list[str]) -> None:
    assert glob_match(pattern, NOTEBOOKS) == matches


@pytest.mark.parametrize(("text", "normal"), [("./a/b", "a/b"), ("a/../b", "b"), ("a\\b", "a/b"), (".", ".")])
def test_paths_inside_the_root(text: str, normal: str) -> None:
    assert inside_root(text) == normal


@pytest.mark.parametrize("text", ["../x", "a/../../x", "/abs", "C:/x", "", "  "])
def test_paths_escaping_the_root(text: str) -> None:
    with pytest.raises(ValueError, match="expected a path"):
        inside_root(text)


@pytest.mark.parametrize(
    ("notebook", "step_id"),
    [("examples/01_train.ipynb", "examples_01_train"), ("A B/c-d.IPYNB", "a_b_c_d"), ("01.ipynb", "nb_01"),
     ("__x__.ipynb", "x"), ("é.ipynb", "nb"), ("data/00.v2.ipynb", "data_00_v2")],
)  # fmt: skip
def test_slugs(notebook: str, step_id: str) -> None:
    assert slug(notebook) == step_id


def test_step_ids_never_take_a_name_another_notebook_has_naturally() -> None:
    ids = step_ids(["a-b.ipynb", "a_b.ipynb", "a.b.ipynb", "a_b_2.ipynb"])
    assert ids == {"a-b.ipynb": "a_b", "a.b.ipynb": "a_b_3", "a_b.ipynb": "a_b_4", "a_b_2.ipynb": "a_b_2"}
    assert len(set(ids.values())) == 4


def test_execution_order_is_stable_and_reports_every_cycle() -> None:
    assert execution_order(["c", "b", "a"], {"c": ["a"]}) == ["b", "a", "c"]
    with pytest.raises(CycleError) as caught:
        execution_order(["a", "b", "c", "d", "e"], {"a": ["b"], "b": ["a"], "c": ["a"], "d": ["e"], "e": ["d"]})
    assert caught.value.cycles == [["a", "b", "a"], ["d", "e", "d"]]


def test_with_prerequisites_is_transitive() -> None:
    assert with_prerequisites(["c"], {"c": ["b"], "b": ["a"], "x": ["c"]}) == {"a", "b", "c"}
