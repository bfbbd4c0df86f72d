"""Running one `lake exe tactic_benchmark` in its own process group, so a timeout ends all of it.

The Lean program starts helpers (Zipperposition, build steps) that outlive a plain `kill` of the parent;
the original cleaned them up with a global `killall tactic_benchmark`, which also hits other users' runs.
Here each run gets a new session (its own process group) and exactly that group is killed: on timeout,
after the run ends (stragglers), and when the harness is interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass


class RunCancelled(Exception):
    """The harness is shutting down; no new process may start."""


@dataclass
class ProcessResult:
    returncode: int | None  # None when the run was killed on timeout
    output: str
    seconds: float
    timed_out: bool


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group (its pgid is its pid: it leads a new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


class ProcessGroups:
    """The live runs, so an interrupt can end every one of them (and none can start afterwards)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self._closed = False

    def start(self, cmd: list[str], cwd: str) -> subprocess.Popen:
        with self._lock:
            if self._closed:
                raise RunCancelled()
            proc = subprocess.Popen(
                cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, encoding="utf-8", errors="replace", start_new_session=True,
            )
            self._live.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._live.discard(proc)

    def kill_all(self) -> None:
        """End every live run and refuse new ones (used on Ctrl-C / SIGTERM)."""
        with self._lock:
            self._closed = True
            live = list(self._live)
        for proc in live:
            kill_group(proc)

    def run(self, cmd: list[str], cwd: str, timeout: float) -> ProcessResult:
        """Run `cmd` to completion or until `timeout` seconds, then make sure its group is gone."""
        start = time.monotonic()
        proc = self.start(cmd, cwd)
        timed_out = False
        try:
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                output = _drain(proc)
            kill_group(proc)  # stragglers of a run that ended by itself
        finally:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()
            self.finished(proc)
        return ProcessResult(None if timed_out else proc.returncode, output or "",
                             time.monotonic() - start, timed_out)


def _drain(proc: subprocess.Popen) -> str:
    """Collect what a killed run had printed; give up if an escaped process keeps the pipe open."""
    try:
        output, _ = proc.communicate(timeout=5)
        return output or ""
    except subprocess.TimeoutExpired:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
        return ""
