"""The Azure ML backend: each run is one Azure ML v2 pipeline job (docs/architecture.md#ways-in, docs/architecture.md#parts-and-data-flow; docs/azureml-sdk.md#pipeline-shape).

Modules, one responsibility each:
- `compile`: ResolvedPlan -> PipelineJob, built offline (nodes, edges, compute, the finalize report node);
- `snapshot`: the code snapshot every notebook node shares, with ignore rules;
- `environments`: plan environments -> one Azure ML environment per distinct definition;
- `components`: the command components, i.e. the contract between the pipeline and steps/*.py;
- `export`: the pipeline (and schedule) as YAML, keeping the settings azure-ai-ml's YAML schema hides;
- `client`: the one overridable MLClient factory and workspace resolution;
- `submit`, `watch`, `rerun`, `schedule`: talking to the workspace;
- `collect`, `discover`, `finalize`, `devops_hook`: building the run record, in the report node and locally;
- `commands`, `backend`: the CLI commands and the `Backend` the CLI runs.

Importing this package imports no Azure SDK; each module imports azure.ai.ml inside the functions that
need it (docs/architecture.md#parts-and-data-flow), through `orchestrator.azureml.sdk.require`.
"""
