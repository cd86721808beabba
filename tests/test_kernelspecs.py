"""A run's kernelspec lookups (steps/_kernel.py, RunKernelSpecs): each name is looked up once per run, so a run sees the
kernels installed when it started, and the next run sees what changed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from orchestrator.backends.kernel_dirs import kernel_dirs
from steps import _kernel


def _install(folder: Path, name: str) -> Path:
    spec = folder / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name, "language": "python"}), encoding="utf-8")
    return spec


def test_a_run_looks_each_kernelspec_up_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    installed = _install(tmp_path / "jupyter", "during-run")
    run = _kernel.RunKernelSpecs()
    found = _kernel.find_kernelspec("during-run", run)
    assert found is not None and found.display_name == "during-run"
    assert _kernel.find_kernelspec("not-installed", run) is None
    shutil.rmtree(installed)
    _install(tmp_path / "jupyter", "not-installed")
    # The same run keeps what it found (and did not find); a lookup outside it, or the next run, sees the change.
    assert _kernel.find_kernelspec("during-run", run) is found
    assert _kernel.find_kernelspec("not-installed", run) is None
    assert _kernel.find_kernelspec("during-run") is None
    assert _kernel.find_kernelspec("not-installed", _kernel.RunKernelSpecs()) is not None


def test_the_run_searches_jupyter_clients_folders_without_importing_ipython(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    assert kernel_dirs() == KernelSpecManager().kernel_dirs
    _install(tmp_path / "ipython", "legacy")  # IPython's own kernels folder, the last jupyter_client searches
    code = ("import sys\nfrom orchestrator.backends.kernel_dirs import kernel_dirs\nfrom steps import _kernel\n"
            "spec = _kernel.find_kernelspec('legacy', _kernel.RunKernelSpecs(kernel_dirs=kernel_dirs()))\n"
            "print(spec.display_name, 'IPython' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["legacy", "False"]
