"""Command-line arguments of `python steps/run_notebook.py`, turned into StepRequest fields.

Kept apart from the runner so that run_notebook.py holds one responsibility; it knows nothing of StepRequest
(that would be a circular import) and returns plain keyword arguments.
"""

from __future__ import annotations

import argparse
import json
import keyword
import sys
from pathlib import Path
from typing import Any

try:
    from .settings import STEP_SETTINGS, StepSetting
    from .step_result import RESULT_FILE, StepResult, read_result_file
except ImportError:  # imported by run_notebook.py run as a script
    from settings import STEP_SETTINGS, StepSetting  # type: ignore[no-redef]
    from step_result import RESULT_FILE, StepResult, read_result_file  # type: ignore[no-redef]

EXIT_BAD_ARGUMENTS = 2


class BadArguments(Exception):
    """The arguments make no sense; the usage and the reason are already printed."""

    def __init__(self, exit_code: int = EXIT_BAD_ARGUMENTS) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def parse_arguments(argv: list[str] | None) -> dict[str, Any]:
    """StepRequest keyword arguments, plus `after_result` (paths still to read); BadArguments otherwise."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and why (or the help: exit code 0)
        raise BadArguments(exc.code if isinstance(exc.code, int) else EXIT_BAD_ARGUMENTS) from None
    try:
        return _fields(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        raise BadArguments() from None


def read_after_result(path: Path) -> StepResult:
    """A dependency's result; one that cannot be read counts as not passed (the step is skipped, saying so)."""
    result = read_result_file(path)
    if result is not None:
        return result
    name = str(path / RESULT_FILE if path.is_dir() else path)
    return StepResult(step=name, notebook=f"{name} (unreadable)", status="error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_notebook.py",
        description="Run one notebook (the orchestrator's step contract): writes result.json, the executed "
        "notebook and kernel.log to --output-dir. Exit code 0 passed (or skipped), 1 not passed, 2 bad arguments.",
    )
    add = parser.add_argument
    add("notebook", type=Path, help="the notebook to run")
    add("--output-dir", type=Path, required=True, help="folder for result.json, the notebook and kernel.log")
    add("--step", default="", help="step id (default: a slug of --notebook-rel)")
    add("--notebook-rel", default="", help="notebook path relative to the plan root (default: its file name)")
    add("--parameters", default="{}", metavar="JSON", help="papermill parameters, a JSON object")
    add("--kernel", default="python3", help="kernel when the notebook names none or one not installed here")
    add("--kernel-required", action="store_true", help="use --kernel whatever the notebook names")
    for setting in STEP_SETTINGS:
        add_setting(parser, setting)
    add("--cwd", type=Path, default=None, help="working directory of the kernel (default: the notebook's folder)")
    add("--target", default="cpu")
    add("--environment", default="default")
    add("--expect", default="{}", metavar="JSON", help='expectations, a JSON object: {"accuracy": ">= 0.9"}')
    add("--pythonpath", type=Path, action="append", default=[], metavar="DIR",
        help="folder put first on the kernel's PYTHONPATH (repeatable)")
    add("--env", action="append", default=[], metavar="NAME=VALUE", help="extra kernel environment (repeatable)")
    add("--secret-env", action="append", default=[], metavar="NAME", help="never pass NAME to the kernel")
    add("--pass-env", action="append", default=[], metavar="NAME",
        help="pass NAME to the kernel although its name or value looks secret (repeatable; docs/isolation.md)")
    add("--require-isolation", action="store_true",
        help="fail instead of running a kernel that cannot get its own PID namespace")
    add("--attempt", type=int, default=1)
    add("--after-result", type=Path, action="append", default=[], metavar="PATH",
        help="result.json (or its folder) of a step this one runs after; if it did not pass, this one is skipped")
    return parser


def add_setting(parser: argparse.ArgumentParser, setting: StepSetting) -> None:
    """The option of one step setting (steps/settings.py), checked as it is parsed."""

    def convert(text: str) -> int | float:
        value = setting.type(text)
        if value < 0 or (setting.positive and value == 0) or value != value:
            raise argparse.ArgumentTypeError(f"expected a number {'> 0' if setting.positive else '>= 0'}, got {text!r}")
        return value

    shown = f" (default {setting.default:g})" if isinstance(setting.default, float) else (
        f" (default {setting.default})" if setting.default is not None else "")
    parser.add_argument(setting.option, type=convert, default=setting.default,
                        metavar="BYTES" if setting.type is int else "SECONDS", help=setting.help + shown)


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """Raises ValueError for values argparse cannot check by itself."""
    parameters = _json_object(args.parameters, "--parameters")
    # papermill writes `name = value` into a cell: any other name is a SyntaxError in the notebook, or code.
    wrong = [name for name in parameters if not name.isidentifier() or keyword.iskeyword(name)]
    if wrong:
        raise ValueError(f"--parameters: expected names that are Python identifiers, got {', '.join(map(repr, wrong))}")
    expect = _json_object(args.expect, "--expect")
    if not all(isinstance(rule, str) for rule in expect.values()):
        raise ValueError('--expect: every rule must be a string, e.g. {"accuracy": ">= 0.9"}')
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--env: expected NAME=VALUE, got {item!r}")
        env[name] = value
    return {
        "notebook_path": args.notebook.resolve(),
        "output_dir": args.output_dir.resolve(),
        "step": args.step,
        "notebook_rel": args.notebook_rel,
        "parameters": parameters,
        "kernel": args.kernel,
        "kernel_required": args.kernel_required,
        "cwd": args.cwd.resolve() if args.cwd else None,
        "target": args.target,
        "environment": args.environment,
        "expect": expect,
        "pythonpath": [path.resolve() for path in args.pythonpath],
        "env": env,
        "secret_env": list(args.secret_env),
        "pass_env": list(args.pass_env),
        "isolation_required": args.require_isolation,
        "attempt": args.attempt,
        "after_result": list(args.after_result),
        **{setting.field: getattr(args, setting.dest) for setting in STEP_SETTINGS},
    }


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{option}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option}: expected a JSON object, got {type(value).__name__}")
    return value
