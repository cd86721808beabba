"""Running one pipeline job as the service does (each rule's source is in docs/azureml.md, "The emulated
workspace"):

- a node starts when every data input it takes exists, that is when each node it takes an output of has
  completed; a node after one that failed or was cancelled never starts;
- `continue_on_step_failure` (default true): the other branches go on after a failure; when false, a failure
  cancels the running nodes and the rest;
- the `settings.on_finalize` node runs after every other node has ended, whether the pipeline completed,
  failed or was cancelled (azure-ai-ml dsl/_settings.py), unless the `finalize-never` assumption is on;
- each node runs its command with bash (a plain `python SCRIPT ...` forks from a warm parent instead:
  warm_nodes.py), in a fresh working directory holding the code snapshot as the SDK
  uploads it, with outputs as folders and the Azure ML and MLflow environment variables of a command job;
- `limits.timeout` stops a node (its process group) and cancels it;
- a deterministic node whose component, inputs, code and environment match a completed node of an earlier
  job is reused (not run; its outputs carried), unless the pipeline sets force_rerun;
- before running, the node's environment must declare what its step imports (packages.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from orchestrator.azureml.emulator import commandline, packages, warm_nodes
from orchestrator.azureml.emulator.graph import Literal, Node, NodeOutput, Pipeline, resolve
from orchestrator.azureml.emulator.state import TERMINAL, Child, JobState

if TYPE_CHECKING:
    from orchestrator.azureml.emulator.workspace import EmulatedWorkspace

log = logging.getLogger("orchestrator.azureml.emulator")

POLL_S = 0.05
KILL_GRACE_S = 5.0
STD_LOG = Path("user_logs") / "std_log.txt"  # where studio shows a command job's output


class JobRun:
    """Runs `pipeline` for the job whose state is `state`, in the calling thread."""

    def __init__(self, workspace: EmulatedWorkspace, state: JobState, pipeline: Pipeline) -> None:
        self.ws = workspace
        self.state = state
        self.pipeline = pipeline
        self.folder = Path(state.folder)
        self._lock = workspace.lock
        self._code_hashes: dict[Path, str] = {}
        self._processes: dict[str, warm_nodes.NodeProcess] = {}

    # ------------------------------------------------------------------------------------------ the graph

    def run(self) -> None:
        if self.ws.warm_nodes:
            warm_nodes.shared().prestart()
        tracking = self.ws.tracking
        experiment_id = tracking.experiment(self.pipeline.experiment)
        self.experiment_id = experiment_id
        self.state.run_id = tracking.start(experiment_id, name=self.pipeline.display_name or self.state.name,
                                           tags=dict(self.pipeline.tags))
        self._set_status("Running")
        regular = [n for n in self.pipeline.nodes.values() if n.name != self.pipeline.finalize]
        pending = {n.name: n for n in regular}
        failed = False
        with ThreadPoolExecutor(max_workers=max(len(regular), 1), thread_name_prefix="emulated-node") as pool:
            running: dict[Future[None], str] = {}
            while pending or running:
                stop = self.state.cancel_requested or (failed and not self.pipeline.continue_on_step_failure)
                if stop:
                    for node in list(pending.values()):
                        self._never_ran(node, "Canceled")
                    pending.clear()
                waiting = set(pending) | set(running.values())
                for name, node in list(pending.items()):
                    states = [self._status_of(dep) for dep in node.upstream]
                    never = [dep for dep, s in zip(node.upstream, states) if s is None and dep not in waiting]
                    if never or any(s in TERMINAL and s != "Completed" for s in states):
                        del pending[name]  # a data input that will never exist: the node never starts
                    elif all(s == "Completed" for s in states):
                        del pending[name]
                        running[pool.submit(self._node, node)] = name
                if not running:
                    break
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    future.result()
                    failed = failed or self._status_of(name) != "Completed"
        if self.pipeline.finalize and not self.ws.assumptions.finalize_never:
            self._node(self.pipeline.nodes[self.pipeline.finalize], finalize=True)
        statuses = [self._status_of(n.name) for n in regular]
        final = ("Canceled" if self.state.cancel_requested
                 else "Failed" if any(s in ("Failed", "Canceled") for s in statuses) else "Completed")
        tracking.end(self.state.run_id, final)
        self._set_status(final)

    def _status_of(self, node: str) -> str | None:
        child = self.state.children.get(node)
        return child.status if child is not None else None

    def _set_status(self, status: str) -> None:
        with self._lock:
            self.state.status = status
        self.state.save(self._lock)

    def _never_ran(self, node: Node, status: str) -> None:
        child = self._new_child(node)
        self._finish(child, status, error="the pipeline was cancelled before the node started")

    # ------------------------------------------------------------------------------------------ one node

    def _new_child(self, node: Node, *, track: bool = True) -> Child:
        tags = dict(node.tags)
        run_id = None
        if track:
            parent = {} if (node.name == self.pipeline.finalize and self.ws.assumptions.no_parent_tag) else \
                {"mlflow.parentRunId": str(self.state.run_id)}
            run_id = self.ws.tracking.start(self.experiment_id, name=node.display_name or node.name, tags={**parent, **tags})
        child = Child(node=node.name, name=run_id or self.ws.new_name(), display_name=node.display_name, tags=tags,
                      run_id=run_id, started=time.time())
        with self._lock:
            self.state.children[node.name] = child
        self.state.save(self._lock)
        return child

    def _finish(self, child: Child, status: str, *, error: str | None = None) -> None:
        if child.run_id is not None:
            self.ws.tracking.end(child.run_id, status)
        with self._lock:
            child.status, child.error, child.ended = status, error, time.time()
        self.state.save(self._lock)

    def _node(self, node: Node, *, finalize: bool = False) -> None:
        inputs = self._inputs(node)
        key = self._reuse_key(node, inputs) if node.deterministic and not self.pipeline.force_rerun and not finalize else None
        previous = self.ws.reusable(key) if key else None
        if key is not None and previous is not None:
            self._reuse(node, key, previous)
            return
        child = self._new_child(node)
        child.reuse_key = key
        folder = self.folder / "nodes" / child.name
        outputs = {}
        for name, bound in node.outputs.items():
            path = folder / "outputs" / name
            path.mkdir(parents=True, exist_ok=True)
            outputs[name] = str(path)
            if bound:
                with self._lock:
                    self.state.outputs[bound] = str(path)
        child.outputs = outputs
        log_path = folder / STD_LOG
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            command = commandline.render(node.command, inputs, outputs)
        except commandline.CommandError as exc:
            log_path.write_text(f"UserError: {exc}\n", encoding="utf-8")
            self._finish(child, "Failed", error=str(exc))
            return
        work = folder / "wd"
        self._stage_code(node, work)
        refusal = self._refusal(node, command, work)
        if refusal:
            log_path.write_text(refusal + "\n", encoding="utf-8")
            self._finish(child, "Failed", error=refusal)
            return
        # The finalize node runs because the pipeline was cancelled: the cancel request does not stop it.
        status, error = self._execute(node, child, command, work, log_path, cancellable=not finalize)
        self._finish(child, status, error=error)
        if status == "Completed" and key:
            self.ws.remember(key, self.state.name, node.name)

    def _inputs(self, node: Node) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for name, binding in node.inputs.items():
            if isinstance(binding, Literal):
                values[name] = resolve(binding.value, self.pipeline.inputs)
            elif isinstance(binding, NodeOutput):
                upstream = self.state.children.get(binding.node)
                values[name] = upstream.outputs.get(binding.output) if upstream is not None else None
            else:
                values[name] = None
        return values

    # ------------------------------------------------------------------------------------------- reuse

    def _code_hash(self, code: Path | None) -> str:
        if code is None:
            return ""
        if code not in self._code_hashes:
            from azure.ai.ml._utils._asset_utils import get_content_hash, get_ignore_file

            self._code_hashes[code] = str(get_content_hash(code, get_ignore_file(code)))  # the snapshot id
        return self._code_hashes[code]

    def _reuse_key(self, node: Node, inputs: Mapping[str, str | None]) -> str:
        """What Learn's reuse criteria compare (how-to-debug-pipeline-reuse-issues): component, inputs, code,
        environment. A data input counts by what produced it (its producer's own key), not by its path."""
        values: dict[str, str | None] = {}
        for name, binding in node.inputs.items():
            if isinstance(binding, NodeOutput):
                upstream = self.state.children.get(binding.node)
                values[name] = f"{upstream.reuse_key or upstream.name}:{binding.output}" if upstream else None
            else:
                values[name] = inputs.get(name)
        text = json.dumps([node.component, node.environment.fingerprint, self._code_hash(node.code), values,
                           sorted(node.outputs)], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _reuse(self, node: Node, key: str, previous: Child) -> None:
        """Not run: the original's outputs are carried, and, unless `reused-hidden`, a run of its own in this
        pipeline shows what the original logged."""
        run_id = None
        if not self.ws.assumptions.reused_hidden and previous.run_id:
            run_id = self.ws.tracking.copy(previous.run_id, self.experiment_id, name=node.display_name or node.name,
                                           tags={"mlflow.parentRunId": str(self.state.run_id), **node.tags})
        child = Child(node=node.name, name=run_id or self.ws.new_name(), display_name=node.display_name,
                      tags=dict(node.tags), status="Completed", run_id=run_id, outputs=dict(previous.outputs),
                      reuse_key=key, reused_from=previous.name, started=time.time(), ended=time.time())
        with self._lock:
            self.state.children[node.name] = child
            for name, bound in node.outputs.items():
                if bound and name in previous.outputs:
                    self.state.outputs[bound] = previous.outputs[name]
        self.state.save(self._lock)

    # ----------------------------------------------------------------------------------------- execution

    def _stage_code(self, node: Node, work: Path) -> None:
        """The code snapshot as azure-ai-ml would upload it: its file list, its ignore file's rules."""
        work.mkdir(parents=True, exist_ok=True)
        if node.code is None:
            return
        from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

        files: list[Any] = get_upload_files_from_folder(node.code, ignore_file=get_ignore_file(node.code))
        for source, relative in files:
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    def _refusal(self, node: Node, command: str, work: Path) -> str | None:
        if node.environment.registered:
            log.info("node %s: registered environment %s: its packages are not checked", node.name,
                     node.environment.registered)
            return None
        missing = packages.missing_packages(command, work, node.environment.conda)
        if not missing:
            return None
        module, where = next(iter(missing.items()))
        names = ", ".join(sorted(missing))
        return (f"ModuleNotFoundError: No module named '{module}' (imported by {where}).\n"
                f"[emulator] not run: the node's environment (image {node.environment.image}, its conda file) "
                f"declares no package providing: {names}; on Azure ML the step dies at this import.")

    def _environment(self, child: Child) -> dict[str, str]:
        """A command job's environment: not the submitter's (no secret of this machine reaches a node)."""
        python_bin = str(Path(sys.executable).parent)
        home = Path(self.folder) / "nodes" / child.name / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.pathsep.join([python_bin, os.environ.get("PATH", "/usr/bin:/bin")]), "HOME": str(home),
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        ws = self.ws.workspace
        env.update({
            "AZUREML_RUN_ID": child.name,
            "AZUREML_ARM_SUBSCRIPTION": ws.subscription_id,
            "AZUREML_ARM_RESOURCEGROUP": ws.resource_group,
            "AZUREML_ARM_WORKSPACE_NAME": ws.workspace_name,
            "AZUREML_ARM_PROJECT_NAME": self.pipeline.experiment,
        })  # fmt: skip
        if child.run_id is not None:
            env.update(self.ws.tracking.node_environment(run_id=child.run_id, experiment_id=self.experiment_id,
                                                         experiment=self.pipeline.experiment,
                                                         search_lag_s=self.ws.assumptions.search_lag_s))
        env.update(self.ws.node_environment)
        return env

    def _execute(self, node: Node, child: Child, command: str, work: Path, log_path: Path, *,
                 cancellable: bool = True) -> tuple[str, str | None]:
        with self._lock:
            child.status = "Running"
        self.state.save(self._lock)
        deadline = time.monotonic() + node.timeout_s if node.timeout_s else None
        # A short, fresh TMPDIR: kernels put ipc sockets there, and a socket path is limited to 107 bytes.
        tmp = tempfile.mkdtemp(prefix="aml-")
        with log_path.open("ab") as out:
            process = self._start(command, work, {**self._environment(child), "TMPDIR": tmp}, log_path, out)
            self._processes[node.name] = process
            try:
                while process.poll() is None:
                    if cancellable and self.state.cancel_requested:
                        _stop(process)
                        return "Canceled", "the pipeline was cancelled"
                    if deadline is not None and time.monotonic() > deadline:
                        _stop(process)
                        out.write(f"\n[emulator] limits.timeout of {node.timeout_s:g}s reached: the job was cancelled\n".encode())
                        return "Canceled", f"limits.timeout ({node.timeout_s:g}s) reached"
                    time.sleep(POLL_S)
            finally:
                self._processes.pop(node.name, None)
                shutil.rmtree(tmp, ignore_errors=True)
        code = process.returncode
        return ("Completed", None) if code == 0 else ("Failed", f"the command exited with {code}")


    def _start(self, command: str, work: Path, env: dict[str, str], log_path: Path, out: Any) -> warm_nodes.NodeProcess:
        """bash -c COMMAND in a session of its own; one plain `python SCRIPT ...` forks from the warm parent."""
        argv = warm_nodes.direct_argv(command, env) if self.ws.warm_nodes else None
        if argv is not None:
            out.flush()
            forked = warm_nodes.shared().start(argv, cwd=work, env=env, log_path=log_path)
            if forked is not None:
                return forked
        return subprocess.Popen(["bash", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: warm_nodes.NodeProcess) -> None:
    """SIGTERM to the node's process group, SIGKILL after a grace period."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
