"""Which GPUs this machine has, for the local backend's GPU slots (one notebook per GPU)."""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpus() -> list[str]:
    """GPU ids the local backend may hand out through CUDA_VISIBLE_DEVICES.

    CUDA_VISIBLE_DEVICES, when set, is the user's choice and wins (an empty value or "-1" means none);
    otherwise `nvidia-smi -L` lists the devices. No nvidia-smi means no GPU: we never import torch here,
    because a CUDA build takes seconds to import and the orchestrator must stay light.
    """
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        ids = [part.strip() for part in declared.split(",") if part.strip()]
        return [] if ids in ([], ["-1"]) else ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    return [str(index) for index, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]
