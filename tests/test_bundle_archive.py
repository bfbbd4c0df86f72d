"""Unpacking premises archives as if hostile (issue 22): sparse members, bombs, long lines, links and paths
leaving the target are refused in one line naming the archive and member, and nothing is left unpacked."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from leanpremise.bundle.archive import ArchiveLimits, ArchiveRefused, extract_premises_archive
from leanpremise.bundle.verify import sha256_file

SMALL = ArchiveLimits(max_member_bytes=8 << 20, max_total_bytes=24 << 20, max_line_bytes=1 << 20, max_members=50)


def _tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                     format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


class _Zeros(io.RawIOBase):
    """`n` zero bytes, streamed (a dense bomb without holding it in memory)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def _refused(archive: Path, target: Path, limits=None) -> str:
    with pytest.raises(ArchiveRefused) as e:
        extract_premises_archive(archive, target, limits)
    message = str(e.value)
    assert "\n" not in message and str(archive) in message
    assert not target.exists()  # nothing left unpacked
    return message


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_a_sparse_16_gib_member_is_refused(tmp_path, fmt):
    """The issue's case: a sparse 16 GiB member in a tiny archive (GNU tar writes it from a sparse file)."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src" / "Declarations"
    src.mkdir(parents=True)
    with open(src / "Big.jsonl", "wb") as f:
        f.truncate(16 << 30)
        f.seek(0, 2)
        f.write(b'{"name": "x"}\n')
    archive = tmp_path / "premises.tar.gz"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-czf", str(archive), "-C", str(tmp_path / "src"),
                    "Declarations"], check=True, timeout=300)
    assert archive.stat().st_size < 1 << 20
    message = _refused(archive, tmp_path / "out")  # the default limits
    assert "Declarations/Big.jsonl" in message and "sparse" in message


def test_a_dense_bomb_is_refused_before_it_fills_the_disk(tmp_path):
    """A member of 64 MiB of zeros (64 KiB compressed) against an 8 MiB member bound: refused from its header,
    nothing written."""
    info = tarfile.TarInfo("Declarations/Bomb.jsonl")
    info.size = 64 << 20
    archive = tmp_path / "bomb.tar.gz"
    with gzip.open(archive, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        tar.addfile(info, _Zeros(info.size))
    assert archive.stat().st_size < 1 << 20
    assert "ARCHIVE_MAX_MEMBER_BYTES" in _refused(archive, tmp_path / "out", SMALL)


def test_a_header_claiming_16_gib_is_refused_with_the_default_limits(tmp_path):
    """A member whose header claims 16 GiB (its data need not even be there): refused before any byte."""
    info = tarfile.TarInfo("Declarations/Huge.jsonl")
    info.size = 16 << 30
    raw = io.BytesIO()
    raw.write(info.tobuf(tarfile.PAX_FORMAT))
    raw.write(bytes(1 << 16))
    archive = tmp_path / "huge.tar.gz"
    archive.write_bytes(gzip.compress(raw.getvalue()))
    message = _refused(archive, tmp_path / "out")
    assert "Declarations/Huge.jsonl" in message and "ARCHIVE_MAX_MEMBER_BYTES" in message


def test_many_members_past_the_total_are_refused(tmp_path):
    members = [_file(f"Imports/M{i}.jsonl", b"x\n" * (3 << 20)) for i in range(5)]  # 6 MiB each, 30 in all
    assert "ARCHIVE_MAX_TOTAL_BYTES" in _refused(_tar_gz(tmp_path / "a.tar.gz", members), tmp_path / "out", SMALL)


def test_too_many_members_are_refused(tmp_path):
    members = [_file(f"Imports/M{i}.jsonl", b"{}\n") for i in range(60)]
    assert "ARCHIVE_MAX_MEMBERS" in _refused(_tar_gz(tmp_path / "a.tar.gz", members), tmp_path / "out", SMALL)


@pytest.mark.parametrize("layout", ["one-line", "line-across-chunks", "line-inside-a-chunk"])
def test_a_line_past_the_bound_is_refused(tmp_path, layout):
    long = b"y" * ((1 << 20) + 1)
    data = {"one-line": long,
            "line-across-chunks": b"a\n" * 300_000 + long + b"\n",
            "line-inside-a-chunk": b"a\n" + b"z" * ((1 << 20) + 5) + b"\nb\n"}[layout]
    archive = _tar_gz(tmp_path / "a.tar.gz", [_file("Declarations/L.jsonl", data)])
    assert "ARCHIVE_MAX_LINE_BYTES" in _refused(archive, tmp_path / "out", SMALL)


def test_lines_just_within_the_bound_are_unpacked(tmp_path):
    data = (b"q" * (1 << 20) + b"\n") * 3 + b"r" * (1 << 20)
    archive = _tar_gz(tmp_path / "a.tar.gz", [_file("Declarations/L.jsonl", data)])
    out = extract_premises_archive(archive, tmp_path / "out", SMALL)
    assert (out / "Declarations" / "L.jsonl").read_bytes() == data


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "outside", "absolute"])
def test_links_devices_and_paths_leaving_the_target_are_refused(tmp_path, kind):
    info = tarfile.TarInfo({"outside": "../escape.jsonl", "absolute": "/tmp/escape.jsonl"}.get(kind, "Imports/X.jsonl"))
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "revision"
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    members = [_file("revision", b"r\n"), (info, b"" if kind in ("outside", "absolute") else None)]
    _refused(_tar_gz(tmp_path / "a.tar.gz", members), tmp_path / "out", SMALL)
    assert not (tmp_path / "escape.jsonl").exists()


def test_an_exported_archive_unpacks_as_before(serve_data_dir, tmp_path):
    from leanpremise.export.premises_archive import archive_members, write_premises_archive

    archive = write_premises_archive(serve_data_dir, tmp_path / "premises.tar.gz")
    out = extract_premises_archive(archive, tmp_path / "out")
    for name, source in archive_members(serve_data_dir):
        assert (out / name).read_bytes() == source.read_bytes()


def test_serve_refuses_a_resealed_bundle_holding_a_bomb(serve_bundle, cache_dir, tmp_path):
    """A bundle whose manifest was rewritten to match its bomb (a hostile Hub repo, say): load_bundle
    refuses it in one line, and the cache holds nothing unpacked from it."""
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(serve_bundle, copy)
    long = b"w" * ((1 << 20) + 1)
    _tar_gz(copy / "premises.tar.gz", [_file("revision", b"r\n"), _file("Declarations/A.jsonl", long)])
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["checksums"]["premises.tar.gz"] = sha256_file(copy / "premises.tar.gz")
    manifest["sizes"]["premises.tar.gz"] = (copy / "premises.tar.gz").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as e:
        load_bundle(copy, tmp_path / "cache", limits=SMALL)
    assert "ARCHIVE_MAX_LINE_BYTES" in str(e.value) and "\n" not in str(e.value)
    premises = tmp_path / "cache" / "premises"
    assert not premises.exists() or not any(premises.iterdir())


def test_serve_settings_give_the_archive_limits(monkeypatch):
    from leanpremise.serve.settings import load_config

    monkeypatch.setenv("ARCHIVE_MAX_LINE_BYTES", "12345")
    limits = load_config(None).archive_limits()
    assert limits.max_line_bytes == 12345 and limits.max_member_bytes == ArchiveLimits().max_member_bytes


def test_an_archive_replaced_after_its_verification_is_not_unpacked(tmp_path):
    """unpack_premises hashes the handle it unpacks from: a file swapped in after the manifest check (its
    digest no longer the verified one) is refused, and nothing is cached under the verified digest."""
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import unpack_premises

    verified = _tar_gz(tmp_path / "verified.tar.gz", [_file("revision", b"good\n")])
    digest = sha256_file(verified)
    swapped = _tar_gz(tmp_path / "premises.tar.gz", [_file("revision", b"evil\n")])
    with pytest.raises(BundleError, match="changed since it was verified"):
        unpack_premises(swapped, tmp_path / "cache", digest)
    assert not (tmp_path / "cache" / "premises" / digest[:20]).exists()
    out = unpack_premises(verified, tmp_path / "cache", digest)
    assert (out / "revision").read_bytes() == b"good\n"


def test_npy_rows_are_verified_on_the_bytes_used(tmp_path):
    import numpy as np

    from leanpremise.bundle.layout import BundleError
    from leanpremise.bundle.verify import read_verified_npy

    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "e.npy", rows)
    digest = sha256_file(tmp_path / "e.npy")
    assert np.array_equal(read_verified_npy(tmp_path / "e.npy", digest), rows)
    np.save(tmp_path / "e.npy", -rows)
    with pytest.raises(BundleError, match="sha256 differs"):
        read_verified_npy(tmp_path / "e.npy", digest)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match="not a readable"):
        read_verified_npy(tmp_path / "o.npy", None)
