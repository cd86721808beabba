"""Azure ML schedules for a compiled pipeline (docs/azureml-sdk.md#schedules).

The scheduled pipeline's `run_key` is the trigger time, `${{creation_context.trigger_time}}`, the one
expression Azure ML resolves in string inputs of a scheduled pipeline job (how-to-schedule-pipeline-job.md,
"Use supported expressions in schedules"): every trigger gets a new key, so every scheduled run executes
every notebook instead of reusing yesterday's results (docs/azureml-sdk.md#reuse).

A schedule holds the pipeline as compiled when the schedule was made, code snapshot included: to pick up
new commits, run `orchestrator schedule` again (same --name updates it).
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azureml.names import experiment_name
from orchestrator.errors import InvalidInputError, Problem

TRIGGER_TIME = "${{creation_context.trigger_time}}"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/\-#LW]+$")


def check_cron(expression: str) -> str:
    """Five fields: minutes hours days months days-of-week (NCronTab, as Azure ML expects)."""
    fields = expression.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise InvalidInputError([Problem("--cron", expression,
                                         "expected five fields: minute hour day month day-of-week, e.g. '0 2 * * *'")])
    return " ".join(fields)


def check_time_zone(time_zone: str) -> str:
    from azure.ai.ml.constants import TimeZone

    for zone in TimeZone:
        if zone.value.lower() == time_zone.lower() or zone.name.lower() == time_zone.lower():
            return str(zone.value)
    raise InvalidInputError([Problem("--time-zone", time_zone,
                                     "expected an Azure time zone name such as UTC, 'W. Europe Standard Time' or "
                                     "'Pacific Standard Time' (azure.ai.ml.constants.TimeZone)")])


def schedule_name(name: str | None, experiment: str) -> str:
    if name:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,254}$", name):
            raise InvalidInputError([Problem("--name", name, "expected letters, digits, - and _, starting with a letter or digit")])
        return name
    return experiment_name(experiment).replace(".", "-") + "-schedule"


def build_schedule(job: Any, *, cron: str, name: str, time_zone: str = "UTC") -> Any:
    """A JobSchedule that submits `job` (compiled with run_key = TRIGGER_TIME) on a cron trigger."""
    from azure.ai.ml.entities import CronTrigger, JobSchedule

    return JobSchedule(
        name=name,
        trigger=CronTrigger(expression=check_cron(cron), time_zone=check_time_zone(time_zone)),
        create_job=job,
        display_name=name,
        description=f"Runs {job.display_name} on '{cron}' ({time_zone})",
        tags=dict(job.tags or {}),
    )


def validate_schedule(schedule: Any) -> None:
    result = schedule._validate()  # azure-ai-ml's own validator; validates the pipeline inside it too
    if not result.passed:
        raise InvalidInputError([Problem("schedule", where, str(msg)) for where, msg in sorted(result.error_messages.items())])


def create(client: Any, schedule: Any) -> Any:
    return client.schedules.begin_create_or_update(schedule).result()
