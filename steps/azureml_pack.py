"""The command of a packed Azure ML node: several short notebooks, one after the other, on one node.

Each notebook is run exactly as a node of its own runs it (steps/azureml_step.py: the same runner, its own
timeout and retries), into its own output folder (`result_<i>`, which is what a notebook that runs `after`
it in another node takes as input), and is logged to its own MLflow child run of the node's run, with the
tags a notebook node's run has, so the report node finds one result per notebook.

A notebook that runs after another in the same pack reads that one's output folder directly; one that runs
after a notebook of another node gets that node's output as an `--after-result` input, like a single node.
Exit code: 0 when every notebook passed (or was skipped), 1 when one did not, 2 for bad arguments.

Depends on the standard library only (mlflow is imported by mlflow_log when present).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

if __package__:  # imported as steps.azureml_pack (tests, the local tree)
    from . import azureml_step, mlflow_log
else:  # run as a script in the node: its folder is sys.path[0]
    import azureml_step  # type: ignore[no-redef]
    import mlflow_log  # type: ignore[no-redef]

log = logging.getLogger("orchestrator.steps.azureml_pack")

# The keys of one notebook in the pack's JSON (orchestrator/azureml/compile.py writes them).
NOTEBOOK_KEYS = ("step", "notebook", "parameters", "expect", "kernel", "kernel_required", "timeout", "cell_timeout",
                 "retries", "target", "environment", "pythonpath", "output_limit", "after_inputs", "after_inside")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the notebooks of a pack in one Azure ML node, then log each.")
    p.add_argument("--plan-root", type=azureml_step.text, required=True)
    p.add_argument("--pack", type=json.loads, required=True, help="The notebooks, in running order, JSON")
    p.add_argument("--run-key", type=azureml_step.text, default=None)
    p.add_argument("--invocation-parameters", type=azureml_step.json_object, default={})
    p.add_argument("--output-dir", action="append", type=Path, required=True, help="One per notebook, in order")
    p.add_argument("--secret-env", action="append", default=[])
    p.add_argument("--pass-env", action="append", default=[])
    p.add_argument("--require-isolation", action="store_true")
    p.add_argument("--after-result", action="append", default=[], type=Path,
                   help="Output folders of notebooks in other nodes, in the order `after_inputs` counts them")
    p.add_argument("--runner", type=Path, default=azureml_step.HERE / "run_notebook.py", help=argparse.SUPPRESS)
    p.add_argument("--code-root", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    notebooks = args.pack
    if not isinstance(notebooks, list) or not all(isinstance(n, dict) and set(NOTEBOOK_KEYS) <= n.keys() for n in notebooks):
        p.error(f"--pack: expected a JSON list of notebooks with keys {', '.join(NOTEBOOK_KEYS)}")
    if len(args.output_dir) < len(notebooks):
        p.error(f"--output-dir: {len(notebooks)} notebooks need as many output folders, got {len(args.output_dir)}")
    return args


def notebook_args(args: argparse.Namespace, index: int) -> argparse.Namespace:
    """What steps/azureml_step.py would have parsed for this notebook as a node of its own."""
    entry: dict[str, Any] = args.pack[index]
    after = [args.after_result[i] for i in entry["after_inputs"] if i < len(args.after_result)]
    after += [args.output_dir[i] for i in entry["after_inside"]]
    return argparse.Namespace(
        plan_root=args.plan_root, step=entry["step"], notebook=entry["notebook"], parameters=entry["parameters"],
        expect=entry["expect"], kernel=entry["kernel"], kernel_required=bool(entry["kernel_required"]),
        timeout=entry["timeout"], cell_timeout=entry["cell_timeout"], retries=int(entry["retries"]),
        target=entry["target"], environment=entry["environment"], pythonpath=entry["pythonpath"],
        output_limit=int(entry["output_limit"]), run_key=args.run_key, output_dir=args.output_dir[index],
        invocation_parameters=args.invocation_parameters,
        secret_env=args.secret_env, pass_env=args.pass_env, require_isolation=args.require_isolation,
        after_result=after, runner=args.runner, code_root=args.code_root,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    root = args.code_root or azureml_step.code_root()
    mlflow_log.tag_pack([entry["step"] for entry in args.pack])
    worst = 0
    for index in range(len(args.pack)):
        one = notebook_args(args, index)
        code = azureml_step.run(one, root)
        mlflow_log.log_child_step(one.output_dir, run_key=args.run_key, name=one.notebook)
        if code not in (0, 1):
            log.error("step=%s the runner exited with %d (a broken runner, not a notebook outcome)", one.step, code)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
