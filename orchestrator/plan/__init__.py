"""The plan: orchestrator.yml + notebook metadata, validated and resolved (DESIGN 3)."""

from orchestrator.plan.spec import EnvironmentSpec, ResolvedPlan, StepSpec, TargetSpec

__all__ = ["EnvironmentSpec", "ResolvedPlan", "StepSpec", "TargetSpec"]
