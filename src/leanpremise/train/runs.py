"""Output dirs, checkpoints and revisions: resuming, starting fresh on new data, the final model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes

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


def resolve_resume(value: str | bool | None, output_dir: Path, verbose: bool = True) -> str | None:
    """--resume_from_checkpoint True|False|PATH -> the checkpoint dir to resume from, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    text = "" if value is None else str(value).strip()
    if text.lower() in ("", "false", "none", "no", "0"):
        return None
    if text.lower() in ("true", "yes", "1"):
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if verbose:
            print(f"Resuming from the latest checkpoint {last}" if last else
                  f"No checkpoint in {output_dir}: starting training from scratch", flush=True)
        return last
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {text}: no such checkpoint dir")
    return str(path)


def write_revision(directory: Path, revision: str) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(directory) / REVISION_FILE, (revision.strip() + "\n").encode("utf-8"))


def save_final(model, output_dir: Path, revision: str) -> Path:
    """Save the model to <output_dir>/final with a `revision` file, replacing an old final only when complete."""
    final = Path(output_dir) / "final"
    tmp = Path(output_dir) / "final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(str(tmp))
    write_revision(tmp, revision)
    if final.exists():
        old = Path(output_dir) / "final.old"
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final
