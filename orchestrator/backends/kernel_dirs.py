"""The folders kernelspecs are found in, in jupyter_client's order (its KernelSpecManager's default `kernel_dirs`:
Jupyter's data path, then IPython's own kernels folder), computed without importing IPython: jupyter_client imports
it for that last folder, ~40 ms of a one-notebook run's critical path for a folder rarely used. Standard library
and jupyter_core only (orchestrator/backends/warm_start.py imports no jupyter_client). Used by the local backend's
lookups (steps/_kernel.RunKernelSpecs) and the early warm parent's; the step runner on Azure ML nodes keeps
jupyter_client's own."""

from __future__ import annotations

import os


def ipython_kernels_dir() -> str:
    """IPython's kernels folder, where IPython.paths.get_ipython_dir puts it (IPYTHON_DIR, IPYTHONDIR, ~/.ipython)."""
    chosen = os.environ.get("IPYTHON_DIR") or os.environ.get("IPYTHONDIR") or os.path.join("~", ".ipython")
    return os.path.join(os.path.normpath(os.path.expanduser(chosen)), "kernels")


def kernel_dirs() -> list[str]:
    from jupyter_core.paths import jupyter_path

    return [*jupyter_path("kernels"), ipython_kernels_dir()]
