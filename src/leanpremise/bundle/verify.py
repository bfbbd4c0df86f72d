"""Checking a bundle against its manifest: exactly the listed files, each of its size and sha256."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from leanpremise.bundle.layout import FAST_VERIFY_MAX_BYTES, MANIFEST, BundleError
from leanpremise.bundle.manifest import Manifest

logger = logging.getLogger(__name__)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as fh:
        return sha256_handle(fh, chunk)


def sha256_handle(fh, chunk: int = 1 << 20) -> str:
    """sha256 of what is left to read of an open file (callers seek back to read the same bytes)."""
    h = hashlib.sha256()
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()


def read_verified_npy(path: Path, expected_sha256: str | None) -> np.ndarray:
    """A .npy file read once into memory, its sha256 checked on those very bytes (when `expected_sha256`
    is given), and the array made from them: what is used is what was verified, even if the file is
    replaced meanwhile. No pickles; a BundleError naming the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror or e})") from e
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise BundleError(f"{path}: sha256 differs from {MANIFEST} (damaged or edited after export)")
    try:
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} is not read")
        shape, fortran, dtype = read_header(buf)
        if dtype.hasobject:
            raise ValueError("object arrays are not read")
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
        return array.reshape(shape, order="F" if fortran else "C")
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path}: not a readable .npy file ({e})") from e


def first_nonfinite_row(rows: np.ndarray, chunk: int = 1 << 16) -> int | None:
    """Index of the first row holding a NaN or an infinity, or None; in chunks, so a large corpus needs no
    full-size temporary."""
    for start in range(0, len(rows), chunk):
        bad = ~np.isfinite(rows[start:start + chunk]).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def check_finite_rows(rows: np.ndarray, path: Path) -> None:
    """Raise a one-line BundleError unless every row of `rows` (read from `path`) is finite: a NaN row
    would score NaN against every goal."""
    first = first_nonfinite_row(rows)
    if first is not None:
        n = int((~np.isfinite(rows).all(axis=1)).sum())
        raise BundleError(f"{path}: {n} embedding row(s) hold NaN or infinite values (the first, row {first}); "
                          "damaged or tampered with, re-export the bundle")


def bundle_files(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """sha256 and size of every regular file under `root` except the manifest (what export lists)."""
    root = Path(root)
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != MANIFEST]
    rels = [p.relative_to(root).as_posix() for p in files]
    return ({r: sha256_file(p) for r, p in zip(rels, files, strict=True)},
            {r: p.stat().st_size for r, p in zip(rels, files, strict=True)})


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _present_files(bundle: Path) -> set[str]:
    """Relative paths of the files in `bundle` (symlinks not followed), refusing links that leave it."""
    root = bundle.resolve()
    found = set()
    for folder, dirs, files in os.walk(bundle, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not _inside(path.resolve(), root):
                raise BundleError(f"{path}: a symlink pointing outside the bundle ({os.readlink(path)})")
        found.update((Path(folder) / name).relative_to(bundle).as_posix() for name in files)
    found.discard(MANIFEST)
    return found


def check_inventory(bundle: Path, manifest: Manifest) -> None:
    """Raise BundleError (one line naming the file) unless the bundle holds exactly the listed files, each
    inside the bundle and of its listed size. Only `stat`s: cheap enough to run before every start."""
    bundle = Path(bundle)
    if not manifest.checksums:
        raise BundleError(f"{bundle / MANIFEST}: lists no files, so the bundle cannot be verified; "
                          "re-export it with this version of `leanpremise export`")
    present = _present_files(bundle)
    for rel in sorted(manifest.checksums):
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        if not _inside(path.resolve(), bundle.resolve()):
            raise BundleError(f"{path}: resolves outside the bundle ({path.resolve()})")
        if rel in manifest.sizes and (size := path.stat().st_size) != manifest.sizes[rel]:
            raise BundleError(f"{path}: {size} bytes, {MANIFEST} says {manifest.sizes[rel]} "
                              "(truncated, damaged or edited after export)")
    if extra := sorted(present - manifest.checksums.keys()):
        raise BundleError(f"{bundle / extra[0]}: in the bundle but not listed in {MANIFEST}"
                          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if not manifest.sizes:
        logger.warning("%s: a format-%d manifest without file sizes: sizes are not checked and every file is "
                       "hashed, also in the fast check", bundle / MANIFEST, manifest.format_version)


def _size_only(path: Path, rel: str, manifest: Manifest) -> bool:
    """Check a listed file's presence and size (its hash is checked where it is read); False: not hashed."""
    if not Path(path).is_file():
        raise BundleError(f"{path}: listed in {MANIFEST} but missing")
    size = Path(path).stat().st_size
    if rel in manifest.sizes and size != manifest.sizes[rel]:
        raise BundleError(f"{path}: {size} bytes, {MANIFEST} says {manifest.sizes[rel]} "
                          "(truncated, damaged or edited after export)")
    return False


def verify_file(path: Path, rel: str, manifest: Manifest, fast: bool = False) -> bool:
    """Check the file listed as `rel` against the manifest; True when it was hashed.

    Fast: a file larger than FAST_VERIFY_MAX_BYTES whose size the manifest lists is only size-checked."""
    expected = manifest.checksums.get(rel)
    if expected is None:
        raise BundleError(f"{path}: not listed in {MANIFEST}")
    _size_only(path, rel, manifest)
    if fast and rel in manifest.sizes and Path(path).stat().st_size > FAST_VERIFY_MAX_BYTES:
        return False
    if sha256_file(path) != expected:
        raise BundleError(f"{path}: sha256 differs from {MANIFEST} (damaged or edited after export)")
    return True


def verify_bundle_files(bundle: Path, manifest: Manifest, fast: bool = False, skip: frozenset = frozenset()
                        ) -> None:
    """Every listed file against its size and sha256 (fast: large files by size only); run after
    :func:`check_inventory`, so nothing unlisted is there. `skip`: files the caller verifies itself as it
    reads them (`read_verified_npy`), only size-checked here."""
    hashed = sum(verify_file(Path(bundle) / rel, rel, manifest, fast or rel in skip)
                 if rel not in skip else _size_only(Path(bundle) / rel, rel, manifest)
                 for rel in sorted(manifest.checksums))
    logger.info("verified %d bundle files (%d by sha256%s)", len(manifest.checksums), hashed,
                ", the others by size" if hashed < len(manifest.checksums) else "")


