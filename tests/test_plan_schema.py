"""The JSON Schema of orchestrator.yml (`orchestrator schema`): valid 2020-12, with help text, and it accepts
the plans the loader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.plan import plan_json_schema
from tests.builders import DESIGN_PLAN

EXAMPLES_PLAN = Path(__file__).resolve().parents[1] / "examples" / "orchestrator.yml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, text: str) -> list[str]:
    return [error.message for error in validator.iter_errors(yaml.safe_load(text))]


def test_the_schema_declares_draft_2020_12() -> None:
    schema = plan_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "orchestrator.yml"
    assert schema["additionalProperties"] is False


def test_the_design_plan_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert _errors(validator, DESIGN_PLAN) == []


@pytest.mark.skipif(not EXAMPLES_PLAN.is_file(), reason="examples/orchestrator.yml not present")
def test_the_examples_plan_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert _errors(validator, EXAMPLES_PLAN.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "text",
    [
        "notebooks: [{path: a.ipynb, timeout: 90}]",
        "notebooks: [{path: a.ipynb, timeout: 1h30m, cell_timeout: null, output_limit: 500kB}]",
        "notebooks: [{glob: '**/*.ipynb', skip: true}, {path: a.ipynb, skip: false}]",
        "notebooks: [{path: a.ipynb, expect: {a: '0.8..1.0', b: '~= 0.5 +- 0.01', c: '!= 0'}}]",
        "targets: {big: {azureml: {instance_type: Standard_NC6s_v3}, local: {slots: 2}, gpus: 2}}",
        "environments: {reg: {azureml: 'my-env:3'}}",
        "secret_env: [MY_TOKEN]",
        "{}",
    ],
)
def test_plans_the_loader_accepts_validate(validator: jsonschema.Draft202012Validator, text: str) -> None:
    assert _errors(validator, text) == []


@pytest.mark.parametrize(
    "text",
    [
        "version: 2",
        "notebook: []",
        "notebooks: [{path: a.ipynb, timout: 3}]",
        "notebooks: [{path: a.ipynb, timeout: soon}]",
        "notebooks: [{path: a.ipynb, timeout: 0}]",
        "notebooks: [{path: a.ipynb, glob: '*.ipynb'}]",
        "notebooks: [{timeout: 3}]",
        "notebooks: [{path: a.ipynb, target: null}]",
        "notebooks: [{path: a.ipynb, retries: -1}]",
        "notebooks: [{path: a.ipynb, expect: {a: '>> 1'}}]",
        "notebooks: [{path: a.ipynb, output_limit: lots}]",
        "targets: {big: {azureml: {compute: c, instance_type: t}}}",
        "targets: {big: {local: {slots: 0}}}",
    ],
)
def test_plans_the_loader_rejects_do_not_validate(validator: jsonschema.Draft202012Validator, text: str) -> None:
    assert _errors(validator, text) != []


def test_every_setting_has_help_for_editors() -> None:
    schema = plan_json_schema()
    missing: list[str] = []

    def visit(name: str, node: dict[str, Any]) -> None:
        for key, prop in node.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{name}.{key}")

    visit("plan", schema)
    for name, definition in schema["$defs"].items():
        assert definition.get("description"), name
        visit(name, definition)
    assert missing == []
