"""The emulated workspace's MLflow tracking store: MLflow's own file store under the workspace folder.

Every node that starts gets an MLflow run in the pipeline's experiment, with the tags Azure ML sets on a
pipeline child (how-to-track-experiments-mlflow: child runs carry `mlflow.parentRunId`, the pipeline run's
id), its display name as run name and the node's tags; the node's process gets the environment variables
that make `mlflow` attach to that run, as on the service (how-to-log-view-metrics: the tracking URI and the
run are configured for you). The run id is the child job's name, as in Azure ML.

mlflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE is set (mlflow/store/tracking/file_store.py);
the emulator sets it for itself and its nodes.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
HOOKS = Path(__file__).resolve().parent / "hooks"
LAG_VARIABLE = "ORCHESTRATOR_EMULATOR_SEARCH_LAG_S"
# Azure ML job status -> MLflow run status (how-to-track-experiments-mlflow, "status" mapping).
RUN_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED"}


class Tracking:
    def __init__(self, root: Path) -> None:
        os.environ.setdefault(ALLOW_FILE_STORE, "true")
        from mlflow.tracking import MlflowClient

        root.mkdir(parents=True, exist_ok=True)
        self.uri = root.resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self._lock = threading.Lock()

    def experiment(self, name: str) -> str:
        with self._lock:
            found = self.client.get_experiment_by_name(name)
            return str(found.experiment_id) if found is not None else str(self.client.create_experiment(name))

    def start(self, experiment_id: str, *, name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(experiment_id, tags={RUN_NAME_TAG: name, **tags}, run_name=name)
        return str(run.info.run_id)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, RUN_STATUS.get(status, "FAILED"), end_time=int(time.time() * 1000))

    def copy(self, source: str, experiment_id: str, *, name: str, tags: Mapping[str, str]) -> str:
        """A new run showing what `source` logged (a reused node: Learn says the service displays the original's
        outputs, logs and metrics), with this pipeline's parent and name."""
        from mlflow.entities import Metric, Param

        original = self.client.get_run(source)
        kept = {k: v for k, v in original.data.tags.items() if k not in (PARENT_TAG, RUN_NAME_TAG) and not k.startswith("mlflow.")}
        run_id = self.start(experiment_id, name=name, tags={**kept, **tags})
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in original.data.metrics.items()],
                              params=[Param(k, v) for k, v in original.data.params.items()])
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(self.client.download_artifacts(source, "", scratch))
            if any(local.iterdir()):
                self.client.log_artifacts(run_id, str(local))
        self.end(run_id, "Completed")
        return run_id

    def node_environment(self, *, run_id: str, experiment_id: str, experiment: str, search_lag_s: float) -> dict[str, str]:
        env = {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment_id,
               "MLFLOW_EXPERIMENT_NAME": experiment, ALLOW_FILE_STORE: "true"}
        if search_lag_s > 0:
            env["PYTHONPATH"] = str(HOOKS)
            env[LAG_VARIABLE] = repr(search_lag_s)
        return env
