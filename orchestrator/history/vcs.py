"""Which code a run ran: the commit and branch of the plan's repository, for the history.

A CI agent checks out a detached HEAD, so the branch comes from the CI's own variable first (Azure DevOps:
BUILD_SOURCEBRANCH, a pull request's source branch: SYSTEM_PULLREQUEST_SOURCEBRANCH; GitHub Actions:
GITHUB_HEAD_REF / GITHUB_REF_NAME), and from git only outside CI.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

BRANCH_VARIABLES = ("SYSTEM_PULLREQUEST_SOURCEBRANCH", "BUILD_SOURCEBRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME")
DEFAULT_BRANCH_ENV = "ORCHESTRATOR_DEFAULT_BRANCH"
FALLBACK_DEFAULT_BRANCH = "main"


def git(root: Path, *args: str) -> str | None:
    """`git -C root ARGS` output, stripped; None when git is missing, fails, or says nothing."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def short_branch(ref: str) -> str:
    """refs/heads/feature/x -> feature/x (DevOps variables carry the full ref)."""
    for prefix in ("refs/heads/", "refs/remotes/origin/", "origin/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def current_commit(root: Path) -> str | None:
    return git(root, "rev-parse", "HEAD")


def current_branch(root: Path, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in BRANCH_VARIABLES:
        value = env.get(name, "").strip()
        if value and not value.startswith("refs/pull/"):
            return short_branch(value)
    head = git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return None if head in (None, "HEAD") else head


def default_branch(root: Path, environ: Mapping[str, str] | None = None) -> str:
    """The branch baselines come from: $ORCHESTRATOR_DEFAULT_BRANCH, else origin's HEAD, else main."""
    env = os.environ if environ is None else environ
    configured = env.get(DEFAULT_BRANCH_ENV, "").strip()
    if configured:
        return short_branch(configured)
    remote_head = git(root, "symbolic-ref", "--short", "refs/remotes/origin/HEAD")
    return short_branch(remote_head) if remote_head else FALLBACK_DEFAULT_BRANCH
