"""`export` killed with SIGKILL resumes from its chunks (keyed by the model's content, never paths or times),
and what it writes follows the umask."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import build_data_dir

CHUNK = 5
CHUNKS_BEFORE_HANG = 2

HANGING_EXPORT = """
import sys, threading
import leanpremise.export.exporter as exporter
real, calls = exporter._encode, [0]
def encode_then_hang(model, texts, batch_size):
    calls[0] += 1
    if calls[0] > {n}:
        threading.Event().wait()  # stands still until the test kills the process
    return real(model, texts, batch_size)
exporter._encode = encode_then_hang
from leanpremise.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("resume-data") / "data")


def _config(model, out, data_dir, cache_dir):
    from leanpremise.data import DataConfig
    from leanpremise.export.exporter import ExportConfig

    return ExportConfig(model=str(model), out=out, onnx=False, model_name="tiny", chunk_size=CHUNK,
                        data=DataConfig(data_dir=data_dir, cache_dir=cache_dir), progress=False)


def _wait_for_chunks(chunk_dir: Path, n: int, proc: subprocess.Popen, timeout: float = LIVENESS_S) -> None:
    """Poll until `n` chunk files exist (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while len(list(chunk_dir.glob("[0-9]*.npy"))) < n:
        assert proc.poll() is None, f"export ended early (rc {proc.returncode})"
        assert time.monotonic() < deadline, "no chunks appeared"
        time.sleep(0.05)


def test_export_killed_with_sigkill_resumes_and_encodes_only_the_rest(data_dir, tiny_model_dir, cache_dir,
                                                                       tmp_path, monkeypatch, caplog):
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.export import exporter

    out = tmp_path / "bundle"
    chunk_dir = exporter.chunks_dir(out.resolve())
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-c", HANGING_EXPORT.format(n=CHUNKS_BEFORE_HANG), "export",
                             "--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--out", str(out),
                             "--no-onnx", "--model_name", "tiny", "--chunk_size", str(CHUNK)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_chunks(chunk_dir, CHUNKS_BEFORE_HANG, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=LIVENESS_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and len(list(chunk_dir.glob("[0-9]*.npy"))) == CHUNKS_BEFORE_HANG

    n = len(load_corpus(DataConfig(data_dir=data_dir, cache_dir=cache_dir)))
    encoded: list[str] = []
    real = exporter._encode

    def counting(model, texts, batch_size):
        encoded.extend(texts)
        return real(model, texts, batch_size)

    monkeypatch.setattr(exporter, "_encode", counting)
    with caplog.at_level(logging.INFO, logger="leanpremise.export.corpus_embeddings"):
        resumed = exporter.export_bundle(_config(tiny_model_dir, out, data_dir, cache_dir))
    done = CHUNK * CHUNKS_BEFORE_HANG
    assert len(encoded) == n - done  # the rerun embedded only what the killed run had not saved
    assert f"resuming: {done} of {n} premises already embedded" in caplog.text

    encoded.clear()
    fresh_out = tmp_path / "fresh"
    fresh = exporter.export_bundle(_config(tiny_model_dir, fresh_out, data_dir, cache_dir))
    assert len(encoded) == n
    np.testing.assert_array_equal(np.load(out / resumed.embeddings), np.load(fresh_out / fresh.embeddings))
    assert Manifest.read(out).checksums == Manifest.read(fresh_out).checksums  # the same bundle, file by file


def test_model_identity_ignores_where_and_when_but_sees_what_embeds(tiny_model_dir, tmp_path):
    from leanpremise.model.identity import model_identity

    first = model_identity(tiny_model_dir)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tiny_model_dir, copy)  # new path, new mtimes
    os.utime(copy / "model.safetensors", (1, 1))
    (copy / "README.md").write_text("another model card")
    config = json.loads((copy / "config_sentence_transformers.json").read_text())
    config["__version__"] = {"sentence_transformers": "0.0.1"}
    (copy / "config_sentence_transformers.json").write_text(json.dumps(config, indent=4))
    assert model_identity(copy) == first

    def changed(edit) -> str:
        target = tmp_path / f"edit-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_model_dir, target)
        edit(target)
        return model_identity(target)

    def flip_weight_byte(d):
        data = bytearray((d / "model.safetensors").read_bytes())
        data[-1] ^= 1
        (d / "model.safetensors").write_bytes(bytes(data))

    def edit_json(name, key, value):
        def edit(d):
            obj = json.loads((d / name).read_text())
            obj[key] = value
            (d / name).write_text(json.dumps(obj))
        return edit

    others = [changed(flip_weight_byte),
              changed(edit_json("1_Pooling/config.json", "pooling_mode", "cls")),
              changed(edit_json("tokenizer_config.json", "model_max_length", 64)),
              changed(edit_json("config_sentence_transformers.json", "prompts", {"query": "q: "})),
              changed(lambda d: shutil.rmtree(d / "2_Normalize"))]
    assert first not in others and len(set(others)) == len(others)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                              (0o002, 0o664, 0o775)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    from leanpremise.atomic import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new" / "f.json", b"{}")
        atomic_write_bytes(tmp_path / "new" / "f.json", b"[]")  # replacing keeps following the umask
    finally:
        os.umask(old)
    assert (tmp_path / "new" / "f.json").read_bytes() == b"[]"
    assert (tmp_path / "new" / "f.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "new").stat().st_mode & 0o777 == dir_mode
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["f.json"]  # no temp file left


def test_an_exported_bundle_is_readable_by_others_under_umask_022(data_dir, tiny_model_dir, cache_dir, tmp_path):
    from leanpremise.export.exporter import export_bundle

    out = tmp_path / "bundle"
    old = os.umask(0o022)
    try:
        export_bundle(_config(tiny_model_dir, out, data_dir, cache_dir))
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert {rel for rel, mode in modes.items() if mode not in (0o644, 0o755)} == set()
    assert modes["manifest.json"] == modes["embeddings/tiny-v4.99.0.npy"] == modes["premises.tar.gz"] == 0o644
