"""The bundle lists every file with size and sha256; `serve` refuses one that holds other files, lacks one,
names a path leaving it or has a damaged file, in one line naming the file; Hub downloads are pinned to a
commit and checked alike."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from liveness import LIVENESS_S
from serve_helpers import build_data_dir, free_port


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_model_dir, cache_dir) -> Path:
    from leanpremise.data import DataConfig
    from leanpremise.export.exporter import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("verify")
    data_dir = build_data_dir(root / "data")
    out = root / "bundle"
    export_bundle(ExportConfig(model=str(tiny_model_dir), out=out, onnx=False, model_name="tiny",
                               data=DataConfig(data_dir=data_dir, cache_dir=cache_dir), progress=False))
    return out


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    target = tmp_path / "b"
    shutil.copytree(bundle, target, symlinks=True)
    return target


def _refused(copy: Path, cache_dir: Path, **kw) -> str:
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_bundle

    with pytest.raises(BundleError) as err:
        load_bundle(copy, cache_dir, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _edit_manifest(copy: Path, **changes) -> None:
    data = json.loads((copy / "manifest.json").read_text())
    data.update(changes)
    (copy / "manifest.json").write_text(json.dumps(data))


def test_an_intact_bundle_loads_in_full_and_fast_mode(copy, cache_dir):
    from leanpremise.serve.revisions.loader import load_bundle

    for fast in (False, True):
        loaded = load_bundle(copy, cache_dir, fast=fast)
        assert loaded.embeddings.shape[0] == loaded.manifest.premise_count


@pytest.mark.parametrize("rel", ["model/model.safetensors", "model/tokenizer.json", "model/1_Pooling/config.json",
                                 "premises.tar.gz"])
def test_a_damaged_file_of_any_part_is_refused_naming_it(copy, cache_dir, rel):
    _flip_last_byte(copy / rel)  # same size: only the sha256 tells
    assert _refused(copy, cache_dir) == f"{copy / rel}: sha256 differs from manifest.json (damaged or edited after export)"


def test_an_unlisted_file_is_refused_naming_it_even_without_hashing(copy, cache_dir):
    (copy / "model" / "extra.py").write_text("print('hi')")
    msg = _refused(copy, cache_dir, verify=False)
    assert msg == f"{copy / 'model' / 'extra.py'}: in the bundle but not listed in manifest.json"


def test_a_listed_file_that_is_missing_is_refused_naming_it(copy, cache_dir):
    (copy / "model" / "tokenizer.json").unlink()
    assert _refused(copy, cache_dir) == f"{copy / 'model' / 'tokenizer.json'}: listed in manifest.json but missing"


def test_a_truncated_file_fails_on_its_size_before_anything_is_hashed(copy, cache_dir, monkeypatch):
    import leanpremise.bundle.verify as bundle_module

    def no_hashing(path, chunk=0):
        raise AssertionError(f"hashed {path}")

    path = copy / "model" / "model.safetensors"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-10])
    monkeypatch.setattr(bundle_module, "sha256_file", no_hashing)
    assert _refused(copy, cache_dir, verify=False) == (
        f"{path}: {size - 10} bytes, manifest.json says {size} (truncated, damaged or edited after export)")


def test_fast_mode_hashes_small_files_and_sizes_large_ones(copy, cache_dir, monkeypatch):
    import leanpremise.bundle.verify as bundle_module
    from leanpremise.serve.revisions.loader import load_bundle

    weights, tokenizer = copy / "model" / "model.safetensors", copy / "model" / "tokenizer.json"
    assert tokenizer.stat().st_size < 1 << 20 < weights.stat().st_size
    monkeypatch.setattr(bundle_module, "FAST_VERIFY_MAX_BYTES", 1 << 20)
    _flip_last_byte(weights)
    load_bundle(copy, cache_dir, fast=True)  # a large file keeping its size passes the fast check ...
    assert "model.safetensors: sha256 differs" in _refused(copy, cache_dir)  # ... not the full one
    _flip_last_byte(weights)
    _flip_last_byte(tokenizer)
    assert "tokenizer.json: sha256 differs" in _refused(copy, cache_dir, fast=True)


@pytest.mark.parametrize(("field", "value"), [("embeddings", "../outside.npy"), ("embeddings", "/etc/passwd"),
                                              ("onnx", "model/../../x.onnx")])
def test_manifest_paths_leaving_the_bundle_are_refused(copy, cache_dir, field, value):
    _edit_manifest(copy, **{field: value})
    msg = _refused(copy, cache_dir)
    assert msg.startswith(f'{copy / "manifest.json"}: field "{field}": ') and repr(value) in msg


def test_listed_paths_leaving_the_bundle_are_refused(copy, cache_dir):
    data = json.loads((copy / "manifest.json").read_text())
    _edit_manifest(copy, checksums={**data["checksums"], "../../etc/passwd": "0" * 64},
                   sizes={**data["sizes"], "../../etc/passwd": 1})
    msg = _refused(copy, cache_dir)
    assert f'{copy / "manifest.json"}: field "checksums"' in msg and "'../../etc/passwd'" in msg


def test_a_symlink_pointing_outside_the_bundle_is_refused(copy, cache_dir, tmp_path):
    from leanpremise.bundle.manifest import Manifest

    outside = tmp_path / "elsewhere.npy"
    emb = copy / Manifest.read(copy).embeddings
    shutil.move(emb, outside)
    emb.symlink_to(outside)  # same bytes, so only the link's target gives it away
    assert _refused(copy, cache_dir).startswith(f"{emb}: a symlink pointing outside the bundle")


def test_the_named_parts_must_be_listed_files(copy, cache_dir):
    _edit_manifest(copy, onnx="model/onnx/model.onnx")
    assert "`onnx` 'model/onnx/model.onnx' is not among the files listed" in _refused(copy, cache_dir)


def test_a_format_1_manifest_without_sizes_loads_with_a_warning_and_is_still_hashed(copy, cache_dir, caplog):
    from leanpremise.serve.revisions.loader import load_bundle

    data = json.loads((copy / "manifest.json").read_text())
    del data["sizes"]
    (copy / "manifest.json").write_text(json.dumps({**data, "format_version": 1}))
    with caplog.at_level(logging.WARNING, logger="leanpremise.bundle.layout"):
        load_bundle(copy, cache_dir, fast=True)
    assert "format-1 manifest without file sizes" in caplog.text
    _flip_last_byte(copy / "model" / "model.safetensors")
    assert "sha256 differs" in _refused(copy, cache_dir, fast=True)  # no size: hashed even in the fast check


def test_a_manifest_listing_no_files_is_refused(copy, cache_dir):
    _edit_manifest(copy, checksums={}, sizes={})
    assert "lists no files, so the bundle cannot be verified" in _refused(copy, cache_dir)


def test_serve_refuses_an_unlisted_file_in_one_line_before_uvicorn(copy, tmp_path):
    (copy / "notes.txt").write_text("left here")
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "serve", str(copy), "--port", str(free_port()),
                           "--fast_verify"], env=env, check=False, capture_output=True, text=True, timeout=LIVENESS_S)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{copy / 'notes.txt'}: in the bundle but not listed in manifest.json" in lines[0]


# ---- --from_hub -----------------------------------------------------------------------------------------

DATA_COMMIT, MODEL_COMMIT = "a" * 40, "b" * 40


@pytest.fixture
def fake_hub(bundle, tmp_path, monkeypatch):
    """Hub downloads served from snapshot folders laid out as huggingface_hub's cache; records each call."""
    import huggingface_hub

    data = tmp_path / "hub" / "datasets--me--data" / "snapshots" / DATA_COMMIT
    model = tmp_path / "hub" / "models--me--model" / "snapshots" / MODEL_COMMIT
    shutil.copytree(bundle, data, ignore=shutil.ignore_patterns("model"))
    shutil.copytree(bundle / "model", model)
    calls = []

    def hf_hub_download(repo, filename, repo_type=None, revision=None, cache_dir=None):
        from huggingface_hub.errors import EntryNotFoundError

        calls.append(("file", repo, filename, revision))
        if not (data / filename).exists():
            raise EntryNotFoundError(f"{filename} not in {repo}")
        return str(data / filename)

    def snapshot_download(repo, revision=None, cache_dir=None, allow_patterns=None):
        calls.append(("snapshot", repo, tuple(allow_patterns or ()), revision))
        return str(model)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return {"data": data, "model": model, "calls": calls}


def test_from_hub_pins_each_repo_to_a_commit_and_logs_it(fake_hub, cache_dir, caplog):
    from leanpremise.serve.revisions.loader import load_from_hub

    with caplog.at_level(logging.INFO, logger="leanpremise.serve.revisions.loader"):
        loaded = load_from_hub("me/data", "v4.99.0", "me/model", None, cache_dir)
    assert loaded.embeddings.shape[0] == loaded.manifest.premise_count
    assert f"data: me/data@v4.99.0 is commit {DATA_COMMIT}" in caplog.text
    assert f"model: me/model@(default branch) is commit {MODEL_COMMIT}" in caplog.text
    files = [c for c in fake_hub["calls"] if c[0] == "file"]
    assert files[0][3] == "v4.99.0" and {c[3] for c in files[1:]} == {DATA_COMMIT}  # the rest at that commit
    (snapshot,) = [c for c in fake_hub["calls"] if c[0] == "snapshot"]
    assert "model.safetensors" in snapshot[2] and "README.md" in snapshot[2]  # only the listed model files


@pytest.mark.parametrize("where", ["model/model.safetensors", "premises.tar.gz"])
def test_from_hub_refuses_a_download_that_differs_from_the_manifest(fake_hub, cache_dir, where):
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_from_hub

    path = (fake_hub["model"] / where.removeprefix("model/")) if where.startswith("model/") else fake_hub["data"] / where
    _flip_last_byte(path)
    with pytest.raises(BundleError, match=rf"{path.name}: sha256 differs from manifest.json"):
        load_from_hub("me/data", "v4.99.0", "me/model", "v4.99.0", cache_dir)


def test_from_hub_refuses_a_data_repo_without_a_manifest_unless_allowed(fake_hub, cache_dir, caplog):
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_from_hub
    from leanpremise.serve.settings import load_config

    (fake_hub["data"] / "manifest.json").unlink()  # a repo published by the original upload script
    with pytest.raises(BundleError, match="has no manifest.json.*--allow_unverified_hub"):
        load_from_hub("me/data", "v4.99.0", "me/model", None, cache_dir)
    assert load_config(None).allow_unverified_hub is False
    assert load_config(None, allow_unverified_hub=True).allow_unverified_hub is True
