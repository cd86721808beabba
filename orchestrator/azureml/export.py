"""The compiled pipeline (or schedule) as YAML that azure-ai-ml's `load_job` / `load_schedule` read back.

Fixes over `PipelineJob.dump()`:
- `settings.on_finalize` is put back. azure-ai-ml declares on_init/on_finalize in its YAML schema only when
  AZURE_ML_CLI_PRIVATE_FEATURES_ENABLED is set *when the SDK is imported* (_schema/pipeline/settings.py),
  so `dump()` silently drops them (docs/azureml-sdk.md#on_finalize, docs/azureml-sdk.md#pitfalls). Loading keeps them either way: that
  schema has `unknown = INCLUDE`, so the key passes through into PipelineJobSettings (tested).
- each node's `display_name` and `tags` are put back (dump() drops them; load_job keeps them);
- literal pipeline inputs are written as plain values. `dump()` writes a literal holding an expression,
  such as a schedule's run_key `${{creation_context.trigger_time}}`, as `{path: ...}`, which `load_job`
  reads back as a uri_folder input (tested);
- code paths are written relative to the YAML file, so the file and the staged snapshots it points at
  can be moved together.

Submitting from Python (`orchestrator run --backend azureml`) does not go through YAML at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from steps.atomic import write_text_atomic

HEADER = """\
# Compiled by orchestrator from {source}.
# settings.on_finalize names the report node, which runs after every notebook, passed or failed. The
# azure-ai-ml YAML schema hides that setting unless AZURE_ML_CLI_PRIVATE_FEATURES_ENABLED=true (reference:
# docs/azureml.md); load_job keeps it, but check that your tool does before submitting this file.
# `code:` paths are relative to this file's folder.
"""
HIDDEN_SETTINGS = ("on_init", "on_finalize")
# libyaml's emitter when PyYAML was built with it: the same text as the pure-Python SafeDumper (tested), about
# 3.5 times faster; a 300-notebook pipeline is 1.4 MB of YAML, 1.4 s with the pure-Python one.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _restore_settings(data: dict[str, Any], job: Any) -> None:
    settings = data.setdefault("settings", {})
    for key in HIDDEN_SETTINGS:
        value = getattr(job.settings, key, None)
        if value:
            settings[key] = value


def restore_node_labels(data: dict[str, Any], job: Any) -> None:
    """Each node's display_name and tags: `PipelineJob._to_dict()` drops them (the node schema of a pipeline
    dump leaves them out), while `load_job` reads them when present. Without them a job submitted from the
    file shows step ids in studio and its child jobs carry no `step` tag."""
    nodes = data.get("jobs")
    if not isinstance(nodes, dict):
        return
    for name, node in (job.jobs or {}).items():
        entry = nodes.get(name)
        if not isinstance(entry, dict):
            continue
        if node.display_name:
            entry["display_name"] = node.display_name
        if node.tags:
            entry["tags"] = {str(k): str(v) for k, v in node.tags.items()}


def relative_code(node: Any, base: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "code" and isinstance(value, str) and os.path.isabs(value):
                node[key] = Path(os.path.relpath(value, base)).as_posix()
            else:
                relative_code(value, base)
    elif isinstance(node, list):
        for item in node:
            relative_code(item, base)


def _literal_inputs(data: dict[str, Any], job: Any) -> None:
    inputs = data.get("inputs")
    if not isinstance(inputs, dict):
        return
    for name, value in (job.inputs or {}).items():
        literal = getattr(value, "_data", value)
        if isinstance(literal, (str, int, float, bool)):
            inputs[name] = literal


def job_dict(job: Any) -> dict[str, Any]:
    """`job._to_dict()` (what PipelineJob.dump() writes), each distinct component dumped once: the SDK dumps a
    node's component inline for every node (0.6 CPU-s of a 300-notebook pipeline sharing three). Nodes after the
    first of their component are dumped with a reference in its place, which is then replaced by a copy of the
    first one's (tests/test_azureml_compile.py checks the result equals `_to_dict()`)."""
    import copy

    from azure.ai.ml.entities import Component

    from orchestrator.azureml.validation import COMPONENT_REFERENCE

    first: dict[int, str] = {}  # id(component) -> the node it is dumped in
    nodes: dict[str, Any] = {}
    for name, node in job.jobs.items():
        component = node._component
        if isinstance(component, Component) and id(component) in first:
            node = copy.copy(node)
            node._component = COMPONENT_REFERENCE
        elif isinstance(component, Component):
            first[id(component)] = name
        nodes[name] = node
    shallow = copy.copy(job)
    shallow.component = copy.copy(job.component)
    shallow.component._jobs = nodes
    data: dict[str, Any] = shallow._to_dict()
    dumped = data.get("jobs") or {}
    for name, node in job.jobs.items():
        component = node._component
        if isinstance(component, Component) and first[id(component)] != name and name in dumped:
            dumped[name]["component"] = copy.deepcopy(dumped[first[id(component)]]["component"])
    return data


def pipeline_dict(job: Any, base: Path) -> dict[str, Any]:
    data = job_dict(job)
    _restore_settings(data, job)
    restore_node_labels(data, job)
    _literal_inputs(data, job)
    relative_code(data, base.resolve())
    return data


def schedule_dict(schedule: Any, pipeline_file: str) -> dict[str, Any]:
    """The schedule, its job referenced as a pipeline YAML file: `JobSchedule.dump()` inlines the job, a
    form `load_schedule` refuses ("create_job.job: Missing data for required field"); it reads
    `create_job: {job: <file>}` (the SDK's tests/test_configs/schedule/*.yml do the same)."""
    data: dict[str, Any] = schedule._to_dict()
    data["create_job"] = {"job": pipeline_file}
    return data


def plain_data(value: Any) -> Any:
    """An SDK dump (OrderedDicts, which yaml.safe_dump refuses) as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def _write(data: dict[str, Any], path: Path, source: str) -> None:
    text = HEADER.format(source=source) + yaml.dump(data, Dumper=_DUMPER, sort_keys=False, width=120, allow_unicode=True)
    write_text_atomic(path, text)


def write_pipeline(job: Any, path: Path, *, source: str) -> None:
    _write(pipeline_dict(job, path.parent), path, source)


def write_schedule(schedule: Any, path: Path, *, source: str) -> Path:
    """The schedule at `path`, and its pipeline job next to it (`<stem>.pipeline.yml`, returned)."""
    pipeline = path.with_name(f"{path.stem}.pipeline.yml")
    write_pipeline(schedule.create_job, pipeline, source=source)
    _write(schedule_dict(schedule, pipeline.name), path, source)
    return pipeline
