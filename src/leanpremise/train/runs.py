"""Output dirs, checkpoints and revisions: resuming, starting fresh on new data, the final model."""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes, fresh_partial_dir, swap_in_dir

logger = logging.getLogger(__name__)

REVISION_FILE = "revision"


def saved_revision(output_dir: Path) -> str | None:
    """The data revision a previous run in `output_dir` trained on (final/revision, else revision)."""
    for path in (Path(output_dir) / "final" / REVISION_FILE, Path(output_dir) / REVISION_FILE):
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    return None


def retire_stale_output(output_dir: Path, revision: str) -> Path | None:
    """When `output_dir` holds a run on another data revision, move it aside so training starts fresh.

    The original train.sh deleted such a dir; moving it to `<output_dir>.stale-<n>`
    loses nothing. Returns the new location, or None when nothing was stale.
    """
    output_dir = Path(output_dir)
    old = saved_revision(output_dir)
    if old is None or old == revision.strip():
        return None
    n = 1
    while (target := output_dir.with_name(f"{output_dir.name}.stale-{n}")).exists():
        n += 1
    output_dir.rename(target)
    logger.warning("data revision %r differs from %r of the run in %s: starting fresh (old run moved to %s)",
                   revision, old, output_dir, target)
    print(f"Training on data at {revision}; the previous run in {output_dir} trained on {old}: "
          f"starting from scratch (moved it to {target})")
    return target


CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
"""The Hugging Face trainer's checkpoint dirs: checkpoint-<global step>."""

REQUIRED_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (None: it is complete).

    A kill while the trainer saves leaves some files missing or cut short. Complete means: the trainer state
    parses and has a global step; the optimizer and scheduler states are there; every torch file (optimizer,
    scheduler, RNG, arguments) is a whole zip archive (torch.save's format keeps its index at the end, so a
    cut file has none); there are model weights, and every safetensors file is as long as its header says.
    Reading headers and indexes only, not tensors, keeps this to milliseconds per checkpoint.
    """
    checkpoint = Path(checkpoint)
    for name in REQUIRED_FILES:
        if not (checkpoint / name).is_file():
            return f"{name} is missing"
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"trainer_state.json is unreadable ({exc})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    for path in sorted(p for p in checkpoint.iterdir() if p.suffix in (".pt", ".pth", ".bin") and p.is_file()):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is not a complete torch file"
    weights = sorted(checkpoint.rglob("*.safetensors"))
    if not weights and not (checkpoint / "pytorch_model.bin").is_file():
        return "there are no model weights"
    for path in weights:
        if (problem := safetensors_problem(path)) is not None:
            return f"{path.relative_to(checkpoint)} {problem}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Whether a safetensors file is whole: an 8-byte header length, a JSON header, then all its tensors' bytes."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if 8 + header_len > size:
                return f"is cut short ({size} bytes, less than its header)"
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, struct.error) as exc:
        return f"has no readable header ({exc})"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        return f"is {size} bytes where its header says {expected}"
    return None


def latest_complete_checkpoint(output_dir: Path, verbose: bool = True) -> str | None:
    """The newest checkpoint-N of `output_dir` that is complete, saying which newer ones were skipped and why."""
    output_dir = Path(output_dir)
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir()
             and (m := CHECKPOINT_DIR.match(p.name))] if output_dir.is_dir() else []
    for _, checkpoint in sorted(found, reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        if verbose:
            print(f"Skipping the incomplete checkpoint {checkpoint}: {problem}", flush=True)
    return None


def resolve_resume(value: str | bool | None, output_dir: Path, verbose: bool = True) -> str | None:
    """--resume_from_checkpoint True|False|PATH -> the checkpoint dir to resume from, or None.

    True takes the newest complete checkpoint (a kill while saving leaves the newest one half-written); a
    named checkpoint that is incomplete is an error rather than a crash in the middle of loading it.
    """
    text = "" if value is None else str(value).strip()
    if text.lower() in ("", "false", "none", "no", "0"):
        return None
    if text.lower() in ("true", "yes", "1"):
        last = latest_complete_checkpoint(output_dir, verbose)
        if verbose:
            print(f"Resuming from the latest checkpoint {last}" if last else
                  f"No complete checkpoint in {output_dir}: starting training from scratch", flush=True)
        return last
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {text}: no such checkpoint dir")
    if (problem := checkpoint_problem(path)) is not None:
        raise ValueError(f"--resume_from_checkpoint {text}: the checkpoint is incomplete: {problem}")
    return str(path)


def write_revision(directory: Path, revision: str) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(directory) / REVISION_FILE, (revision.strip() + "\n").encode("utf-8"))


def save_final(model, output_dir: Path, revision: str) -> Path:
    """Save the model to <output_dir>/final with a `revision` file, replacing an old final only when complete."""
    final = Path(output_dir) / "final"
    work = fresh_partial_dir(final)
    model.save(str(work))
    write_revision(work, revision)
    swap_in_dir(work, final)
    return final
