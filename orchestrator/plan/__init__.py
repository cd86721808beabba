"""The plan: orchestrator.yml + notebook metadata, validated and resolved (docs/architecture.md#plan-file)."""

from orchestrator.plan.loader import load_plan, validate_plan
from orchestrator.plan.schema import plan_json_schema
from orchestrator.plan.spec import EnvironmentSpec, ResolvedPlan, StepSpec, TargetSpec

__all__ = [
    "EnvironmentSpec",
    "ResolvedPlan",
    "StepSpec",
    "TargetSpec",
    "load_plan",
    "plan_json_schema",
    "validate_plan",
]
