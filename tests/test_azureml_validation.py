"""The fast validation (each distinct component once) reports exactly what azure-ai-ml's full `_validate` reports.

Each case breaks a freshly compiled examples pipeline in one way (a node, a component shared by several nodes,
the graph, the pipeline's own fields) and compares the two problem sets; a case whose full validation finds
nothing would prove nothing, so each one must find something.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml.compile import CompileOptions, compile_plan  # noqa: E402
from orchestrator.azureml.validation import error_messages, validate  # noqa: E402
from orchestrator.errors import InvalidInputError  # noqa: E402
from tests.azureml_support import examples_plan, make_repo  # noqa: E402


@pytest.fixture(scope="module")
def fresh_job(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Any]:
    root = tmp_path_factory.mktemp("repo")
    plan = examples_plan(make_repo(root))
    options = CompileOptions(cache_dir=root.parent / "cache", commit="abc123")
    return lambda: compile_plan(plan, options)


def _set_input(node: str, name: str, value: Any) -> Callable[[Any], None]:
    return lambda job: setattr(job.jobs[node].inputs, name, value)


def _set_setting(name: str, value: str) -> Callable[[Any], None]:
    return lambda job: setattr(job.settings, name, value)


def _no_command(job: Any) -> None:
    job.jobs["models_02_train"].component.command = None  # one component, shared by four nodes


def _no_compute(job: Any) -> None:
    job.jobs["models_02_train"].compute = None


def _two_breaks(job: Any) -> None:
    _no_command(job)
    _no_compute(job)
    job.settings.on_finalize = "data_00_prepare"


BREAKS: dict[str, Callable[[Any], None]] = {
    "a component shared by several nodes": _no_command,
    "a node without compute": _no_compute,
    "a node missing a required input": _set_input("models_02_train", "step", None),
    "on_finalize on a node others depend on": _set_setting("on_finalize", "data_00_prepare"),
    "on_finalize on a node that depends on another": _set_setting("on_finalize", "recommenders_01_similarity"),
    "on_finalize naming no node": _set_setting("on_finalize", "nope"),
    "on_init the same node as on_finalize": _set_setting("on_init", "orchestrator_report"),
    "several at once": _two_breaks,
}


@pytest.mark.parametrize("case", BREAKS)
def test_every_problem_of_the_full_validation_is_reported(fresh_job: Callable[[], Any], case: str) -> None:
    job = fresh_job()
    BREAKS[case](job)
    full = {str(path): str(message) for path, message in job._validate().error_messages.items()}
    assert full, "the full validation finds nothing: the case proves nothing"
    assert error_messages(job) == full
    with pytest.raises(InvalidInputError) as raised:
        validate(job)
    assert {problem.location for problem in raised.value.problems} == set(full)


def test_a_component_problem_is_reported_on_every_node_using_it(fresh_job: Callable[[], Any]) -> None:
    job = fresh_job()
    _no_command(job)
    shared = job.jobs["models_02_train"].component
    users = {name for name, node in job.jobs.items() if node.component is shared}
    assert len(users) > 1
    assert {path.split(".")[1] for path in error_messages(job)} == users


def test_a_value_the_sdk_cannot_even_dump_fails_both_ways(fresh_job: Callable[[], Any]) -> None:
    from marshmallow import ValidationError

    job = fresh_job()
    job.jobs["data_00_prepare"].limits.timeout = "soon"
    with pytest.raises(ValidationError) as full:
        job._validate()
    with pytest.raises(ValidationError) as fast:
        error_messages(job)
    assert str(full.value.messages[0]) in str(fast.value.messages)
