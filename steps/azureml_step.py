"""The command of every Azure ML notebook node: run one notebook with steps/run_notebook.py, then log it.

Thin by design (docs/architecture.md#thin-entry-points): it turns the node's inputs into the runner's command line
(the same step contract as the local backend, docs/architecture.md#step-contract), retries transient failures (Azure ML command nodes
have no retry of their own, docs/azureml-sdk.md#retries), logs the outcome to the job's MLflow run
(steps/mlflow_log.py) and exits with the runner's code: 0 when the notebook passed, 1 when it did not, so
studio shows the node red and reuse never keeps a failed result (docs/azureml-sdk.md#reuse).

Depends on the standard library only; mlflow is imported by mlflow_log when present.
Input values that could not be written safely on a shell command line arrive as `json:<JSON string>`
(orchestrator/azureml/names.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__:  # imported as steps.azureml_step (tests, the local tree)
    from . import mlflow_log
    from .settings import COMPONENT_SETTINGS
    from .step_result import read_result_file, retry_delay_s, write_result_file
else:  # run as a script in the node: its folder is sys.path[0]
    import mlflow_log  # type: ignore[no-redef]
    from settings import COMPONENT_SETTINGS  # type: ignore[no-redef]
    from step_result import read_result_file, retry_delay_s, write_result_file  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent

log = logging.getLogger("orchestrator.steps.azureml_step")

JSON_PREFIX = "json:"


def text(value: str) -> str:
    return json.loads(value[len(JSON_PREFIX) :]) if value.startswith(JSON_PREFIX) else value


def json_object(value: str) -> dict[str, Any]:
    """--invocation-parameters: a JSON object (an endpoint's `parameters` input, given by whoever invokes it)."""
    try:
        parsed = json.loads(value) if value.strip() else {}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {value[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of notebook parameters, got {value[:200]!r}")
    return parsed


def merged_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The compiled parameters, with the ones given for this run over them (as --param over the plan's)."""
    return {**args.parameters, **getattr(args, "invocation_parameters", {})}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run one notebook in an Azure ML node, then log it to MLflow.")
    p.add_argument("--plan-root", type=text, required=True, help="Plan folder relative to the code snapshot")
    p.add_argument("--step", type=text, required=True)
    p.add_argument("--notebook", type=text, required=True, help="Notebook path relative to the plan folder")
    p.add_argument("--parameters", type=json.loads, default={})
    p.add_argument("--expect", type=json.loads, default={})
    p.add_argument("--kernel", type=text, required=True)
    p.add_argument("--kernel-required", type=lambda v: v.strip().lower() in ("true", "1", "yes"), default=False)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--target", type=text, required=True)
    p.add_argument("--environment", type=text, required=True)
    p.add_argument("--pythonpath", type=json.loads, default=[])
    p.add_argument("--run-key", type=text, default=None)
    p.add_argument("--invocation-parameters", type=json_object, default={},
                   help="Notebook parameters given for this run (a published endpoint's input), JSON object")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--secret-env", action="append", default=[])
    p.add_argument("--pass-env", action="append", default=[])
    p.add_argument("--require-isolation", action="store_true")
    p.add_argument("--after-result", action="append", default=[], type=Path)
    p.add_argument("--runner", type=Path, default=HERE / "run_notebook.py", help=argparse.SUPPRESS)
    p.add_argument("--code-root", type=Path, default=None, help=argparse.SUPPRESS)
    for setting in COMPONENT_SETTINGS:  # passed on to the runner only when the node's input is set
        p.add_argument(setting.option, type=setting.type, default=None, help=setting.help)
    return p.parse_args(argv)


def code_root() -> Path:
    """The snapshot root: this file is <root>/.orchestrator-runtime/steps/azureml_step.py."""
    return HERE.parents[1]


def runner_command(args: argparse.Namespace, root: Path) -> list[str]:
    plan_root = (root / args.plan_root).resolve()
    command = [
        sys.executable, str(args.runner), str(plan_root / args.notebook),
        "--output-dir", str(args.output_dir),
        "--step", args.step,
        "--notebook-rel", args.notebook,
        "--parameters", json.dumps(merged_parameters(args)),
        "--kernel", args.kernel,
        "--target", args.target,
        "--environment", args.environment,
        "--expect", json.dumps(args.expect),
    ]  # fmt: skip
    if args.kernel_required:
        command.append("--kernel-required")
    for setting in COMPONENT_SETTINGS:
        value = getattr(args, setting.dest)
        if value is not None:
            command += [setting.option, repr(value)]
    for folder in args.pythonpath:
        command += ["--pythonpath", str(plan_root / folder)]
    for name in args.secret_env:
        command += ["--secret-env", name]
    for name in args.pass_env:
        command += ["--pass-env", name]
    if args.require_isolation:
        command.append("--require-isolation")
    for path in args.after_result:
        command += ["--after-result", str(path)]
    return command


def run(args: argparse.Namespace, root: Path) -> int:
    """Run the notebook, retrying transient failures; returns the runner's exit code."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    command = runner_command(args, root)
    attempt = 0
    while True:
        attempt += 1
        log.info("step=%s notebook=%s attempt=%d", args.step, args.notebook, attempt)
        # The notebook runs with the plan folder as the runner's working directory base; the runner sets
        # the kernel's own working directory (the notebook's folder), as it does locally.
        code = subprocess.call(command, cwd=str(root))
        result = read_result_file(args.output_dir)
        delay = retry_delay_s(result, attempt, args.retries)
        if delay is not None:
            log.warning("step=%s transient failure; retrying in %g s", args.step, delay)
            time.sleep(delay)
            continue
        if result is not None and attempt > 1:
            write_result_file(args.output_dir, result.but(attempts=attempt))
        return code


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    code = run(args, args.code_root or code_root())
    mlflow_log.log_step(args.output_dir, run_key=args.run_key)
    if code not in (0, 1):
        log.error("step=%s the runner exited with %d (a broken runner, not a notebook outcome)", args.step, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
