"""What a notebook can read (docs/isolation.md): the kernel secret policy, each kernel in its own PID namespace,
`handle -` from standard input, no process of a notebook left behind, stale connection folders removed.

The hostile notebook looks for every credential by every route the audit of issue 14 used: its environment,
/proc/*/environ, /proc/*/cmdline, /proc/*/mem, and the files they name (command-line arguments and open file
descriptors). It reports what it found, so a leak would land in every file of the run folder, where the test
looks for it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PlanError
from orchestrator.plan.loader import load_plan
from steps import _isolation, _kernel
from steps._env_policy import EnvPolicy, is_orchestrator_credential
from steps.run_notebook import StepRequest, run_step
from tests.builders import left_running, make_notebook
from tests.cli_helpers import orchestrator_env, read_results, run_cli
from tests.devops_server import DevOpsServer, isolate_sdk_caches
from tests.trigger_support import kick_off_body, notebook_repo

needs_namespaces = pytest.mark.skipif(not _isolation.detect().confined,
                                      reason=f"no PID namespace here: {_isolation.detect().reason}")

# The needle is assembled at run time, and the kernel's own memory is not searched: its source holds the needle.
HOSTILE = r'''
import os, re
needle = ("LEAK" + "ME").encode()
found, looked = [], {"environ": 0, "cmdline": 0, "mem": 0, "files": 0}

def hit(route, data):
    for match in re.finditer(re.escape(needle), data):
        found.append(f"{route}: {data[max(0, match.start() - 40):match.end() + 40]!r}")

def read(path, limit=1 << 24):
    try:
        with open(path, "rb") as file:
            return file.read(limit)
    except OSError:
        return b""

# First try to undo the namespace: unmount the private /proc (the machine's lies underneath), or, as root, make
# the machine run a program of ours outside every namespace at the next crash (core_pattern; the value read is
# written back, so nothing changes if that were allowed).
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
undo = ["umount " + ("ALLOWED" if libc.umount2(b"/proc", 2) == 0 else "refused")]
try:
    with open("/proc/sys/kernel/core_pattern", "r+b", buffering=0) as file:
        file.write(file.read())
    undo.append("core_pattern ALLOWED")
except OSError:
    undo.append("core_pattern refused")
caps = int(next(l for l in open("/proc/self/status") if l.startswith("CapEff")).split()[1], 16)
bits = {"sys_module": 16, "sys_rawio": 17, "sys_ptrace": 19, "sys_admin": 21, "perfmon": 38, "bpf": 39}
undo.append("capabilities held: " + (",".join(name for name, bit in bits.items() if caps >> bit & 1) or "none"))
print("undo:", ", ".join(undo))
hit("own environment", "\0".join(f"{k}={v}" for k, v in os.environ.items()).encode())
me = os.getpid()
for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
    looked["environ"] += 1
    hit(f"/proc/{pid}/environ", read(f"/proc/{pid}/environ"))
    cmdline = read(f"/proc/{pid}/cmdline")
    looked["cmdline"] += 1
    hit(f"/proc/{pid}/cmdline", cmdline)
    named = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    try:
        named += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        pass
    for path in named:
        if os.path.isfile(path):
            looked["files"] += 1
            hit(f"file {path}", read(path))
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                if perms[0] != "r" or end - start > 1 << 28:
                    continue
                try:
                    mem.seek(start)
                    hit(f"/proc/{pid}/mem", mem.read(end - start))
                except (OSError, ValueError, OverflowError):
                    pass
            looked["mem"] += 1
    except OSError:
        pass
print("looked at", looked)
print("found", len(found))
for line in found:
    print(line)
'''


UNDO_REFUSED = "undo: umount refused, core_pattern refused, capabilities held: none"


def secret(kind: str) -> str:
    return f"{kind}-LEAKME-{uuid.uuid4().hex}"


def leaks(folder: Path, values: list[str]) -> list[str]:
    return [f"{path.relative_to(folder)}: {value}" for path in folder.rglob("*") if path.is_file()
            for value in values if value.encode() in path.read_bytes()]


# ------------------------------------------------------------------------------------------------ the policy


def test_the_policy_removes_credentials_by_name_and_by_value_and_keeps_the_rest() -> None:
    env = {
        # the orchestrator's own credentials
        "SYSTEM_ACCESSTOKEN": "t", "AZURE_CLIENT_SECRET": "t", "AZURE_CLIENT_CERTIFICATE_PASSWORD": "t",
        "AZURE_CLIENT_CERTIFICATE_PATH": "/c.pem", "IDENTITY_ENDPOINT": "http://x", "IDENTITY_HEADER": "t",
        "MSI_SECRET": "t", "AZURE_FEDERATED_TOKEN_FILE": "/t", "ORCHESTRATOR_SERVICEBUS": "t",
        "ORCHESTRATOR_CONNECTION_SETTING": "MY_BUS", "MY_BUS": "t", "ORCHESTRATOR_SIGNING_KEY": "t",
        # secret-looking names, Service Bus / Key Vault / Functions host
        "HF_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "t", "GOOGLE_APPLICATION_CREDENTIALS": "/g.json",
        "npm_config__authToken": "t", "DB_PASSWORD": "t", "STORAGE_SAS": "t", "AzureWebJobsStorage": "t",
        "SERVICEBUS_NAMESPACE": "n", "ORCHESTRATOR_KEY_VAULT_URL": "https://kv", "MY_API_KEY": "t",
        "SQL_CONNECTION_STRING": "t",
        # secret-looking values under innocent names
        "DATA": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==;",
        "PIP_INDEX_URL": "https://user:hunter2@pypi.example.com/simple",
        "BLOB": "https://a.blob.core.windows.net/c?sv=2022&sig=abcdefghijklmnopqrstu",
        "ID": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.sig",
        "THE_PLANS_OWN": "t",
        # harmless
        "PATH": "/usr/bin", "HOME": "/root", "TOKENIZERS_PARALLELISM": "false", "SSL_CERT_FILE": "/ca.pem",
        "PYTHON_KEYRING_BACKEND": "x", "CUDA_VISIBLE_DEVICES": "0", "PWD": "/w", "PYTHONHASHSEED": "0",
        "ORCHESTRATOR_STEP_OUTPUT": "/out", "MLFLOW_TRACKING_URI": "azureml://x",
    }
    kept, removed = EnvPolicy.of(secret_env=["THE_PLANS_OWN"]).apply(env)
    assert sorted(kept) == ["CUDA_VISIBLE_DEVICES", "HOME", "MLFLOW_TRACKING_URI", "ORCHESTRATOR_CONNECTION_SETTING",
                            "ORCHESTRATOR_STEP_OUTPUT",
                            "PATH", "PWD", "PYTHONHASHSEED", "PYTHON_KEYRING_BACKEND", "SSL_CERT_FILE",
                            "TOKENIZERS_PARALLELISM"]
    assert removed == sorted(set(env) - set(kept))

    # pass_env lets a notebook's own credentials through, never the orchestrator's.
    kept, _ = EnvPolicy.of(pass_env=["HF_TOKEN", "DATA", "SYSTEM_ACCESSTOKEN", "MY_BUS"]).apply(env)
    assert "HF_TOKEN" in kept and "DATA" in kept
    assert "SYSTEM_ACCESSTOKEN" not in kept and "MY_BUS" not in kept
    assert is_orchestrator_credential("IDENTITY_HEADER") and not is_orchestrator_credential("HF_TOKEN")


@pytest.mark.parametrize(("plan", "expected"), [
    ("pass_env: [SYSTEM_ACCESSTOKEN]", "(pass_env[0]): SYSTEM_ACCESSTOKEN is one of the orchestrator's own"),
    ("secret_env: [HF_TOKEN]\npass_env: [HF_TOKEN]", "(pass_env): HF_TOKEN also in secret_env"),
    ("isolation: sometimes", "isolation"),
], ids=["own_credential", "both", "isolation_value"])
def test_a_plan_cannot_pass_the_orchestrators_credentials(tmp_path: Path, plan: str, expected: str) -> None:
    make_notebook(tmp_path / "a.ipynb", "x = 1")
    (tmp_path / "orchestrator.yml").write_text(f"version: 1\n{plan}\n", encoding="utf-8")
    with pytest.raises(PlanError) as error:
        load_plan(tmp_path)
    assert "orchestrator.yml" in str(error.value) and expected in str(error.value)


# ------------------------------------------------------------------------------------- a hostile notebook


@needs_namespaces
def test_a_hostile_notebook_under_run_finds_no_credential(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "hostile.ipynb", HOSTILE, "import os\nprint('passed through:', os.environ['HF_TOKEN'])")
    (repo / "orchestrator.yml").write_text("version: 1\nsecret_env: [PLAN_DB_PASS]\npass_env: [HF_TOKEN]\n"
                                           "isolation: required\n", encoding="utf-8")
    secrets = {"SYSTEM_ACCESSTOKEN": secret("devops"), "PLAN_DB_PASS": secret("plan"),
               "AZURE_CLIENT_SECRET": secret("sp"), "IDENTITY_HEADER": secret("msi")}
    done = run_cli("run", repo, "--out", tmp_path / "run", "--jobs", "1",
                   env=orchestrator_env(**secrets, HF_TOKEN="hf-visible-on-purpose"))
    assert done.returncode == 0, done.stderr
    [step] = read_results(tmp_path / "run")["steps"]
    assert "found 0" in step["output_tail"] and "'mem': 1" in step["output_tail"], step["output_tail"]
    assert UNDO_REFUSED in step["output_tail"]
    assert "passed through: hf-visible-on-purpose" in step["output_tail"]
    assert read_results(tmp_path / "run")["kernel_isolation"] == {"mode": "pid_namespace"}
    assert {"report.html", "junit.xml", "results.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert leaks(tmp_path / "run", list(secrets.values())) == []
    assert not any(value in done.stdout + done.stderr for value in secrets.values())


@needs_namespaces
def test_a_hostile_notebook_under_handle_from_stdin_finds_no_credential(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a worker's environment holds: the Service Bus connection, the identity's certificate password and
    # managed identity header; the DevOps job token only in the message, read from standard input.
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    repo, commit = notebook_repo(tmp_path / "repo", {"hostile.ipynb": HOSTILE},
                                 "version: 1\nexperiment: hostile\ndefaults:\n  timeout: 120\n")
    token = secret("job")
    secrets = {"ORCHESTRATOR_SERVICEBUS": f"Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey={secret('sb')}",
               "AZURE_CLIENT_CERTIFICATE_PASSWORD": secret("cert"), "IDENTITY_HEADER": secret("msi")}
    with DevOpsServer(token=token) as server:
        message = json.dumps({"message_id": "m-1", "body": kick_off_body(str(repo.bare), commit),
                              "application_properties": server.message_properties()})
        done = run_cli("handle", "-", "--allow-local-repos", "--out", tmp_path / "run", "--jobs", "1", stdin=message,
                       env=orchestrator_env(**secrets, ORCHESTRATOR_STATE_DIR=str(tmp_path / "state"),
                                            ORCHESTRATOR_WORK_DIR=str(tmp_path / "work"),
                                            ORCHESTRATOR_DEVOPS_HOSTS="http://127.0.0.1"))
        assert done.returncode == 0, done.stderr
        [event] = server.task_completed_events()
        assert event["result"] == "succeeded"
        sent = b"".join(request.body for request in server.requests)
    [step] = read_results(tmp_path / "run")["steps"]
    assert "found 0" in step["output_tail"] and "'mem': 1" in step["output_tail"], step["output_tail"]
    assert UNDO_REFUSED in step["output_tail"]
    values = [token, *secrets.values()]
    assert leaks(tmp_path, values) == []  # the run folder, the fetched repository, the state: no file holds one
    assert not any(value.encode() in sent for value in values)  # nor anything published to DevOps
    assert not any(value in done.stdout + done.stderr for value in values)


# ------------------------------------------------------------------------------------ processes left behind

DAEMON = ("import os, subprocess, sys, time\n"
          "tag = sys.argv[0]\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        os.chdir('/')\n"
          "        os.execvp('sleep', ['sleep', '{seconds}'])\n"
          "    os._exit(0)\n"
          "os.wait()\n"
          "time.sleep(0.2)\n"
          "print('daemon started')")


def _run(notebook: Path, out: Path, **fields: Any) -> dict[str, Any]:
    return asyncio.run(run_step(StepRequest(notebook_path=notebook, output_dir=out, **fields))).to_json()


@needs_namespaces
def test_a_double_forked_setsid_daemon_ends_with_the_kernels_namespace(tmp_path: Path) -> None:
    seconds = f"61.{uuid.uuid4().int % 10**9}"  # a command line nothing else on this machine has
    nb = make_notebook(tmp_path / "nb.ipynb", DAEMON.format(seconds=seconds))
    result = _run(nb, tmp_path / "out")
    assert result["status"] == "passed" and "daemon started" in result["output_tail"], result
    assert left_running(seconds) == []


def test_without_namespaces_a_daemon_is_found_by_its_marker_and_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the marker is found through /proc")
    monkeypatch.setattr(_isolation, "detect", lambda: _isolation.Isolation(_isolation.NONE, reason="test"))
    seconds = f"62.{uuid.uuid4().int % 10**9}"
    nb = make_notebook(tmp_path / "nb.ipynb", DAEMON.format(seconds=seconds))
    result = _run(nb, tmp_path / "out")
    assert result["status"] == "passed" and "daemon started" in result["output_tail"], result
    assert left_running(seconds) == []
    assert "NOT isolated" in (tmp_path / "out" / "kernel.log").read_text()


def test_the_probe_falls_back_with_the_reason_where_no_namespace_can_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        assert _isolation._probe().mode == _isolation.NONE
        return
    monkeypatch.setenv("PATH", str(tmp_path))  # no util-linux at all
    assert _isolation._probe() == _isolation.Isolation(_isolation.NONE,
                                                       reason="util-linux `unshare` is not installed")
    refusing = tmp_path / "unshare"  # as where user namespaces are disabled: unshare runs and refuses
    refusing.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    refusing.chmod(0o755)
    for tool in ("sh", "mount", "setpriv"):
        if shutil.which(tool, path=os.defpath):
            (tmp_path / tool).symlink_to(shutil.which(tool, path=os.defpath) or tool)
    found = _isolation._probe()
    assert found.mode == _isolation.NONE and "Operation not permitted" in found.reason, found


def test_a_run_where_unshare_refuses_says_so_once_records_it_and_honours_required(tmp_path: Path) -> None:
    """The whole fallback through the real command: a plan requiring isolation on a machine that refuses it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    (fake / "unshare").chmod(0o755)
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        make_notebook(repo / f"{name}.ipynb", f"open('{name}-ran', 'w').close()")
    done = run_cli("run", repo, "--out", tmp_path / "run", "--require-isolation",
                   env=orchestrator_env(PATH=f"{fake}{os.pathsep}{os.environ['PATH']}"))
    assert done.returncode == 1, done.stderr
    results = read_results(tmp_path / "run")
    if sys.platform.startswith("linux"):
        assert results["kernel_isolation"] == {
            "mode": "none", "reason": "`unshare` refused (unshare: unshare failed: Operation not permitted)"}
    said = (done.stdout + done.stderr).count("kernels are NOT isolated")
    assert said == 1, done.stdout + done.stderr
    assert [step["error"]["ename"] for step in results["steps"]] == ["IsolationUnavailable"] * 2
    assert not list(repo.glob("*-ran"))


def test_required_isolation_fails_the_notebook_instead_of_running_it_unisolated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_isolation, "detect", lambda: _isolation.Isolation(_isolation.NONE, reason="no unshare"))
    nb = make_notebook(tmp_path / "nb.ipynb", "open('ran', 'w').close()")
    result = _run(nb, tmp_path / "out", isolation_required=True)
    assert result["status"] == "error" and result["error"]["ename"] == "IsolationUnavailable"
    assert "required but unavailable on this machine: no unshare" in result["error"]["evalue"]
    assert not (tmp_path / "ran").exists()
    monkeypatch.setenv(_isolation.REQUIRE_ENV, "1")  # the operator's switch, for `handle` and `worker`
    assert _run(nb, tmp_path / "out2")["error"]["ename"] == "IsolationUnavailable"


# ---------------------------------------------------------------------------------- stale connection folders


def test_connection_folders_left_by_a_killed_process_are_removed_and_live_ones_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed_orchestrator() -> Path:
        """A process that made its folder (lock held, HMAC key written), then died by SIGKILL."""
        code = ("import sys, os, signal, tempfile; sys.path.insert(0, sys.argv[1]); tempfile.tempdir = sys.argv[2]\n"
                "from steps import _kernel\nfolder, _ = _kernel._connection_folder()\n"
                "open(os.path.join(folder, 'kernel.json'), 'w').write('{\"key\": \"hmac\"}')\n"
                "print(folder, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
        done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parents[1]), str(tmp_path)],
                              capture_output=True, text=True, check=False)
        return Path(done.stdout.strip())

    dead = killed_orchestrator()
    old_style = tmp_path / "nbk-before-locks"  # no lock file: removed once it is old enough
    old_style.mkdir()
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    young = tmp_path / "nbk-being-created"  # no lock file yet, just made: kept
    young.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_kernel, "_swept", True)
    live, lock = _kernel._connection_folder()  # this process's own, locked
    try:
        assert sorted(_kernel.remove_stale_folders(tmp_path)) == sorted([dead, old_style])
        assert live.exists() and young.exists()
        # The first kernel a process starts (the next run) sweeps by itself.
        dead = killed_orchestrator()
        assert dead.is_dir()
        monkeypatch.setattr(_kernel, "_swept", False)
        other, other_lock = _kernel._connection_folder()
        assert not dead.exists() and live.exists() and other.exists()
        if other_lock is not None:
            os.close(other_lock)
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(live, ignore_errors=True)


def test_the_init_passes_the_kernels_exit_status(tmp_path: Path) -> None:
    """steps/_pidinit.py alone: the status file holds the kernel's own status, its exit code encodes it."""
    status = tmp_path / "status"
    done = subprocess.run([sys.executable, "-I", "-S", str(_isolation.INIT), str(status), "--", sys.executable,
                           "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], check=False)
    assert status.read_text() == "-11" and done.returncode == 128 + 11


def test_a_kernel_program_that_does_not_exist_fails_as_it_did_without_the_wrapper(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside the namespace only the init would find out; the error must still name the program, before any start.
    spec_dir = tmp_path / "jupyter" / "kernels" / "gone"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": ["no-such-kernel-program-xyz", "{connection_file}"],
                                                      "display_name": "Gone", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", kernel="gone")
    result = _run(nb, tmp_path / "out", kernel="gone", kernel_required=True, start_timeout_s=10)
    assert result["status"] == "error" and result["error"]["kind"] == "infrastructure"
    assert ("could not start kernel 'gone': FileNotFoundError: [Errno 2] No such file or directory: "
            "'no-such-kernel-program-xyz'") in result["error"]["evalue"]
