"""How a kernel process ended, said the way a reader of the report can act on: which signal, and what
usually sends it.

The meanings are the usual causes on Linux (signal(7)); a note names the likeliest one, not a certainty.
"""

from __future__ import annotations

import signal

# What each signal usually means when it ends a kernel. SIGKILL is rarely sent by hand to a notebook's
# kernel: on a machine or container short of memory, the kernel OOM killer sends it.
_MEANINGS = {
    "SIGKILL": "usually the out-of-memory killer (the machine or container ran out of memory), or a `kill -9`",
    "SIGTERM": "something outside the notebook asked it to stop: a job scheduler or container runtime ending "
               "the job, a system shutdown, or a `kill`",
    "SIGINT": "an interrupt (Ctrl-C) was sent to the kernel's process and not handled",
    "SIGHUP": "the terminal or session it belonged to went away",
    "SIGQUIT": "a quit request (Ctrl-\\) was sent to the kernel's process",
    "SIGABRT": "native code gave up (abort()): usually a failed assertion or a corrupted heap in a C/C++ "
               "library; kernel.log often says which",
    "SIGSEGV": "a crash in native code (an extension module, a driver): an invalid memory access",
    "SIGBUS": "a crash in native code: a bad memory access, or a memory-mapped file that shrank or a full /dev/shm",
    "SIGILL": "a crash in native code: an instruction this CPU does not have (a binary built for another CPU)",
    "SIGFPE": "a crash in native code: an arithmetic fault such as an integer division by zero",
    "SIGPIPE": "it wrote to a pipe or socket whose reader had gone",
    "SIGXCPU": "it used up its CPU-time limit (ulimit -t)",
    "SIGXFSZ": "it wrote a file over the file-size limit (ulimit -f)",
}


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def death_hint(returncode: int | None) -> str:
    """How the kernel ended, with the usual cause: for `the kernel died while cell 3 was running (...)`."""
    if returncode is None:
        return "its process stopped answering"
    if returncode < 0:
        return _by_signal(-returncode, f"killed by {signal_name(-returncode)}")
    if returncode > 128 and signal_name(returncode - 128) in _MEANINGS:
        # A kernel started through a wrapper script (conda's activation, a shell kernelspec): the shell reports
        # its child's death by signal N as exit code 128 + N.
        return _by_signal(returncode - 128, f"exit code {returncode}, i.e. its child was killed by "
                                            f"{signal_name(returncode - 128)}")
    return f"the process ended with exit code {returncode}: os._exit() or a library that exits the process"


def _by_signal(number: int, description: str) -> str:
    meaning = _MEANINGS.get(signal_name(number), "sent by another process")
    return f"{description}: {meaning}"
