"""Atomic writes for the orchestrator: the step scripts' writer (steps/atomic.py), the one rule for every
run file, under the name the report modules use."""

from __future__ import annotations

from steps.atomic import write_bytes_atomic as write_atomic
from steps.atomic import write_json_atomic, write_text_atomic

__all__ = ["write_atomic", "write_json_atomic", "write_text_atomic"]
