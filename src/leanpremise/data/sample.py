"""The sample dataset shipped inside the package, unpacked on first use."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from leanpremise.data.config import default_cache_dir

SAMPLE_ARCHIVE = "mathlib-sample.tar.xz"
SAMPLE_DIR_NAME = "mathlib-sample"


def sample_archive() -> Path:
    return Path(str(resources.files("leanpremise") / "sample" / SAMPLE_ARCHIVE))


def sample_data_dir(cache_dir: Path | None = None) -> Path:
    """Path to the unpacked sample; unpacks it (atomically, once per archive version) when needed."""
    archive = sample_archive()
    if not archive.exists():
        raise FileNotFoundError(f"{archive}: the packaged sample dataset is missing from this install")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    root = (cache_dir or default_cache_dir()) / "sample" / digest
    target = root / SAMPLE_DIR_NAME
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        try:
            (tmp / SAMPLE_DIR_NAME).rename(target)
        except OSError:
            if not target.is_dir():  # lost a race with another process that unpacked it: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
