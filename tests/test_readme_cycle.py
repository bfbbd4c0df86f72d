"""The README's "A whole cycle" commands run as written on a CPU machine, on the shipped sample.

The commands are read from README.md itself, so a README line that stops working fails here. Tiny settings
stand in for the slow parts: a model built from a config instead of MiniLM, and a few training steps instead
of the time budget. Lines the README marks as needing a GPU or Lean are left out, as are optional `[...]`
parts (pushing to the Hub needs a token).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from liveness import LIVENESS_S

README = Path(__file__).resolve().parent.parent / "README.md"
NEEDS_OTHER_MACHINE = ("# GPU", "needs Lean")


def cycle_lines(readme: str) -> list[str]:
    """The `leanpremise ...` lines of the README's whole-cycle block, with their comments."""
    section = readme.split("## A whole cycle", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("leanpremise ")]


def runnable(line: str) -> str | None:
    """The command part of a README line, without optional parts; None for lines for another machine."""
    if any(marker in line for marker in NEEDS_OTHER_MACHINE):
        return None
    command = line.split("  #", 1)[0].strip()
    if command.startswith("leanpremise bench results"):  # reads the tactic benchmark's output (needs Lean)
        return None
    return re.sub(r"\s*\[[^\]]*\]", "", command)


def tiny(command: str, model: Path) -> str:
    """Tiny settings for the slow commands: train a config-built model for 2 steps."""
    if command.startswith("leanpremise train "):
        command = command.replace("--max_train_minutes 60", "--max_steps 2")
        command += f" --model_name_or_path {model} --per_device_train_batch_size 8 --disable_tqdm True"
        if "--encoder static" in command:  # its own defaults train for epochs, not minutes
            command += " --max_steps 2"
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_until_healthy(argv: list[str], cwd: Path, env: dict) -> None:
    """Start the server as the README does, wait for /health to report ready, stop it."""
    port = free_port()
    argv = [a if a != "8000" else str(port) for a in argv]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=LIVENESS_S)
                if health.status_code == 200 and health.json().get("status") == "ok":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)  # polling a server's readiness, not standing in for an event we could wait on
        pytest.fail("the README's serve command never became healthy")
    finally:
        proc.terminate()
        proc.wait(timeout=LIVENESS_S)


def test_readme_lines_for_other_machines_are_marked():
    """Every whole-cycle line either runs here or says which machine it needs (the GPU train line)."""
    lines = cycle_lines(README.read_text())
    assert any(line.startswith("leanpremise train") and runnable(line) for line in lines)
    assert any(line.startswith("leanpremise train") and "# GPU" in line for line in lines)


def test_whole_cycle_runs_as_written_on_the_sample(tmp_path, tiny_model_dir):
    from leanpremise.data.sample import sample_data_dir

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               LEANPREMISE_CACHE_DIR=str(tmp_path / "cache"))
    data_dir = sample_data_dir(tmp_path / "cache")
    exe = str(Path(sys.executable).parent / "leanpremise")
    ran = []
    t0 = time.monotonic()
    for line in cycle_lines(README.read_text()):
        command = runnable(line)
        if command is None:
            continue
        command = tiny(command.replace("$D", shlex.quote(str(data_dir))), tiny_model_dir)
        command = exe + command.removeprefix("leanpremise")
        if " serve " in command:
            serve_until_healthy(shlex.split(command), tmp_path, env)
        else:
            # through a shell, as a user types it (the eval-files line uses a glob)
            out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=600, check=False)
            assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        ran.append(command.split()[1])
        print(f"{time.monotonic() - t0:7.1f} s  {line}")
    assert {"data", "train", "export-decls", "baseline", "eval-files", "export", "serve"} <= set(ran)
    assert (tmp_path / "recall.png").is_file()
    assert (tmp_path / "bundle" / "manifest.json").is_file()
