"""The Service Bus trigger (docs/architecture.md#ways-in way in 1, docs/architecture.md#queue-messages): a `kick_off` message from an Azure DevOps server job
becomes one Azure ML pipeline (or, with `orchestrator handle --backend local`, one local run), and a scheduled
`wrap_up` message watches it until the DevOps job is closed. See docs/trigger.md.

Modules, one responsibility each:
- `settings`: every app setting, read in one place;
- `messages`: the kick_off / wrap_up models, with precise errors;
- `intake`: a raw queue message (Function, worker or file) -> a validated message or a readable refusal;
- `fetch`: the repository at the commit, with git, refusing what is not allow-listed;
- `dedupe`: one pipeline per (PlanId, JobId, TaskInstanceId), across redeliveries;
- `secret_store`, `scheduling`, `services`: the overridable seams (Key Vault, scheduled enqueue, clock);
- `handlers`: the entry every front end calls, returning an `Outcome`;
- `kickoff`, `localrun`, `watchdog`: what a kick_off (Azure ML or local) and a wrap_up do;
- `function_blueprint`, `worker`, `commands`: the three front ends (Azure Function, container, CLI).

Importing this package imports no Azure SDK (docs/architecture.md#parts-and-data-flow); only the front ends and the production seams do.
"""
