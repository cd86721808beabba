"""JSON Schema of orchestrator.yml (`orchestrator schema`), for completion and help in editors.

Generated from the models, so it cannot drift from what the loader accepts; cross-references (target names,
files on disk, `after`) are beyond a schema and are checked by `orchestrator validate`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.plan.models import PlanFile

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def plan_json_schema() -> dict[str, Any]:
    schema = PlanFile.model_json_schema(mode="validation")
    # Editors (VS Code's YAML extension, JetBrains) pick the dialect from $schema.
    return {"$schema": SCHEMA_DIALECT, **schema}
