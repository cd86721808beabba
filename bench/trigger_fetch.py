"""How long does the trigger take to fetch a notebook repository without git (dulwich), against git itself?

    python bench/trigger_fetch.py [--notebooks 200] [--history 300] [--data-kb 64] [--work DIR]

Generates a bare git repository of N small notebooks and a few data files with H commits of history, serves
it over HTTPS on 127.0.0.1 with dulwich's smart-HTTP server (tests/git_server.py, a throw-away CA), and times,
with time.perf_counter, three runs each of:

1. the trigger's fetch (orchestrator.trigger.fetch.fetch: depth 1 by commit id, files and index written);
2. the same from the local bare repository (`handle --allow-local-repos`);

The minimum and maximum of each are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.trigger.fetch import Limits, check_url, fetch  # noqa: E402
from orchestrator.trigger.settings import TriggerSettings  # noqa: E402
from tests.builders import make_notebook  # noqa: E402
from tests.git_server import GitHttpsServer, make_ca_and_cert  # noqa: E402
from tests.trigger_support import git, notebook_repo  # noqa: E402

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "trigger_fetch"  # git-ignored
RUNS = 3


def build(work: Path, notebooks: int, history: int, data_kb: int) -> tuple[object, str]:
    repo, _ = notebook_repo(work / "repo", {f"nb/{i:03d}.ipynb": f"x = {i}" for i in range(notebooks)})
    (repo.work / "data").mkdir()
    for i in range(5):
        (repo.work / "data" / f"d{i}.bin").write_bytes(os.urandom(data_kb * 1024))
    commit = repo.commit("data")
    for n in range(history):
        make_notebook(repo.work / f"nb/{n % notebooks:03d}.ipynb", f"x = {n}")
        git("add", "-A", cwd=repo.work)
        git("commit", "-q", "-m", f"change {n}", cwd=repo.work)
    git("push", "-q", str(repo.bare), "HEAD:refs/heads/main", cwd=repo.work)
    commit = git("rev-parse", "HEAD", cwd=repo.work)
    return repo, commit


def timed(label: str, action) -> None:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    print(f"{label:<44} min {min(times):6.2f} s   max {max(times):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notebooks", type=int, default=200)
    parser.add_argument("--history", type=int, default=300)
    parser.add_argument("--data-kb", type=int, default=64)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    repo, commit = build(args.work, args.notebooks, args.history, args.data_kb)
    certs = make_ca_and_cert(args.work / "certs")
    os.environ["SSL_CERT_FILE"] = str(certs[0])
    limits = Limits(timeout_s=300, max_bytes=10 ** 9)
    print(f"{args.notebooks} notebooks, {args.history} commits of history, 5 x {args.data_kb} KiB data")
    with GitHttpsServer({"/org/nb.git": repo.bare}, certs) as server:  # type: ignore[attr-defined]
        url = f"{server.url}/org/nb.git"
        source = check_url(url, TriggerSettings(allowed_hosts=("127.0.0.1",)))
        timed("trigger fetch over https (dulwich)",
              lambda: fetch(source, commit, None, Path(tempfile.mkdtemp(dir=args.work)) / "r", token=None, limits=limits))
        local = check_url(str(repo.bare), TriggerSettings(), allow_local=True)  # type: ignore[attr-defined]
        timed("trigger fetch from a local repository",
              lambda: fetch(local, commit, None, Path(tempfile.mkdtemp(dir=args.work)) / "r", token=None, limits=limits))


if __name__ == "__main__":
    main()
