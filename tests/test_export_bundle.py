"""`leanpremise export`: bundle layout and contents, ONNX fidelity, resumable embedding, reuse of
pre-computed embeddings, atomic replacement, and publishing up to the upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import build_data_dir, free_port


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("export-data") / "data")


@pytest.fixture(scope="module")
def exported(data_dir, tiny_model_dir, cache_dir, tmp_path_factory):
    """A bundle written through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("export") / "bundle"
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(tiny_model_dir),
                           "--data_dir", str(data_dir), "--out", str(out), "--int8", "--model_name", "tiny"],
                          env=env, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out.parent / "export.stderr").write_text(proc.stderr)
    return out


def test_export_log_has_no_quantiser_chatter(exported):
    log = (exported.parent / "export.stderr").read_text()
    assert "exported ONNX and int8 ONNX" in log  # our own INFO lines still come through
    assert "Quantization parameters" not in log and "pre-process" not in log
    assert not [line for line in log.splitlines() if " INFO root: " in line or " WARNING root: " in line]


def test_a_missing_model_dir_fails_at_once_in_one_line(tmp_path):
    code = ("import sys; from leanpremise.cli import main; "
            f"rc = main(['export', '--model', '/no/such/path', '--out', {str(tmp_path / 'b')!r}]); "
            "print(rc, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=LIVENESS_S, check=False)
    assert proc.stdout.split() == ["2", "False", "False"]  # refused before loading anything heavy
    want = "leanpremise export: error: --model /no/such/path: no such model directory"
    assert proc.stderr.strip().splitlines() == [want]
    assert not (tmp_path / "b").exists()


def export_cli(argv, cache_dir):
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "leanpremise", "export", *argv], env=env, check=False,
                          capture_output=True, text=True, timeout=300)


def test_a_folder_that_is_no_model_fails_in_one_line(tmp_path, data_dir, cache_dir):
    """An existing folder that is not a model: exit 1, one error line naming --model, no traceback."""
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "config.json").write_text("{}")
    proc = export_cli(["--model", str(notmodel), "--data_dir", str(data_dir), "--out", str(tmp_path / "b")],
                      cache_dir)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"--model {notmodel}: cannot load it" in proc.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("fusion, field", [
    ({"method": "rrf", "rankers": ["a", "bm25"], "weights": {"a": 1, "bm25": 1}}, "params"),
    ({"method": "rrf", "rankers": ["a", "b"], "weights": {"a": 1, "b": 1}, "params": {"k": 60}}, "rankers"),
    ({"method": "sum", "rankers": ["a"], "weights": {"a": 1}}, "method"),
])
def test_a_bad_fusion_file_fails_in_one_line_naming_it(tmp_path, data_dir, tiny_model_dir, cache_dir, fusion,
                                                       field, capsys, caplog):
    """Refused before the model loads: exit 1, one error line naming the file and the field."""
    from leanpremise.cli import main

    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(fusion))
    rc = main(["export", "--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--cache_dir", str(cache_dir),
               "--out", str(tmp_path / "b"), "--no-onnx", "--hybrid", str(path)])
    err = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert rc == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if str(path) in x]
    assert field in line, err
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def corpus(data_dir, cache_dir):
    from leanpremise.data import DataConfig, load_corpus

    return load_corpus(DataConfig(data_dir=data_dir, cache_dir=cache_dir))


def test_bundle_layout_and_manifest(exported, corpus, data_dir):
    import hashlib

    from leanpremise.bundle.layout import FORMAT_VERSION
    from leanpremise.bundle.manifest import Manifest

    m = Manifest.read(exported)
    assert (m.model_name, m.revision, m.data_revision) == ("tiny", "v4.99.0", "v4.99.0")
    assert m.premise_count == len(corpus) and m.unfiltered_premise_count == len(corpus.unfiltered_names)
    assert m.dimension == 32 and m.embeddings == "embeddings/tiny-v4.99.0.npy"
    assert m.onnx == "model/onnx/model.onnx" and m.onnx_int8 == "model/onnx/model_qint8.onnx"
    on_disk = {p.relative_to(exported).as_posix(): p for p in exported.rglob("*") if p.is_file()}
    del on_disk["manifest.json"]
    assert {"model/model.safetensors", "model/tokenizer.json", "model/1_Pooling/config.json",
            "model/onnx/model.onnx", "model/onnx/model_qint8.onnx", "premises.tar.gz", m.embeddings} <= set(on_disk)
    assert m.checksums == {rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in on_disk.items()}
    assert m.sizes == {rel: len(p.read_bytes()) for rel, p in on_disk.items()}
    assert m.format_version == FORMAT_VERSION == 2
    assert (exported / "model" / "modules.json").is_file() and (exported / "model" / "onnx" / "model.onnx").is_file()
    assert not list(exported.parent.glob(".bundle.*"))  # no partial or chunk dirs left behind
    with tarfile.open(exported / "premises.tar.gz") as tar:
        files = sorted(n.name for n in tar.getmembers() if n.isfile())
    expected = sorted(["revision", "Modules.jsonl", "HammerBlacklist.jsonl"]
                      + [f"Declarations/{p.name}" for p in (data_dir / "Declarations").glob("*.jsonl")]
                      + [f"Imports/{p.name}" for p in (data_dir / "Imports").glob("*.jsonl")])
    assert files == expected


def test_embeddings_are_the_model_s_in_corpus_order(exported, corpus, tiny_model_dir):
    from leanpremise.model.encoder import encode_texts, load_model

    emb = np.load(exported / "embeddings" / "tiny-v4.99.0.npy")
    assert emb.dtype == np.float32 and emb.shape == (len(corpus), 32)
    ref = encode_texts(load_model(tiny_model_dir, "cpu"), corpus.texts)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_onnx_and_int8_embed_like_the_model(exported, corpus):
    from leanpremise.model.backends import OnnxEmbedder, TorchEmbedder

    texts = corpus.texts[:20] + ["⊢ a + b = b + a", "x" * 5000]
    ref = TorchEmbedder(exported / "model").encode(texts)
    fp32 = OnnxEmbedder(exported / "model", exported / "model/onnx/model.onnx").encode(texts)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)
    int8 = OnnxEmbedder(exported / "model", exported / "model/onnx/model_qint8.onnx").encode(texts)
    cos = (int8 * ref).sum(1)
    assert cos.min() > 0.8 and not np.allclose(int8, ref, atol=1e-4)


def test_the_premises_archive_reloads_to_the_same_corpus(exported, corpus, tmp_path):
    from leanpremise.bundle.archive import extract_premises_archive
    from leanpremise.data import DataConfig, load_corpus

    target = extract_premises_archive(exported / "premises.tar.gz", tmp_path / "unpacked")
    again = load_corpus(DataConfig(data_dir=target, cache_dir=tmp_path / "cache"))
    assert again.names == corpus.names and again.unfiltered_names == corpus.unfiltered_names


def test_reexport_is_reproducible_and_reuses_given_embeddings(exported, data_dir, tiny_model_dir, cache_dir,
                                                              tmp_path):
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import DataConfig
    from leanpremise.export.exporter import ExportConfig, export_bundle

    given = np.load(exported / "embeddings" / "tiny-v4.99.0.npy")
    given = given[:, ::-1].copy()  # distinguishable from what encoding would give
    path = tmp_path / "given.npy"
    np.save(path, given)
    out = tmp_path / "b2"
    m = export_bundle(ExportConfig(model=str(tiny_model_dir), out=out, onnx=False, model_name="tiny",
                                   data=DataConfig(data_dir=data_dir, cache_dir=cache_dir), corpus_embeddings=path,
                                   progress=False))
    np.testing.assert_array_equal(np.load(out / m.embeddings), given)
    assert m.onnx is None and not (out / "model" / "onnx").exists()
    assert m.checksums["premises.tar.gz"] == Manifest.read(exported).checksums["premises.tar.gz"]


def test_wrong_shaped_embeddings_fail_clearly_and_keep_the_old_bundle(exported, data_dir, tiny_model_dir,
                                                                       cache_dir, tmp_path):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(exported, out)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 32), np.float32))
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(tiny_model_dir),
                           "--data_dir", str(data_dir), "--out", str(out), "--no-onnx", "--corpus_embeddings",
                           str(bad)], env=env, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"{bad}: shape (3, 32)" in proc.stderr and "premises" in proc.stderr
    assert (out / "manifest.json").read_bytes() == before  # the old bundle is untouched


def test_embedding_resumes_from_chunks_after_an_interruption(tmp_path):
    from leanpremise.export.corpus_embeddings import encode_in_chunks

    texts = [f"theorem t{i} : {i} = {i}" for i in range(23)]
    seen: list[str] = []

    def encode(batch):
        seen.extend(batch)
        return np.array([[len(t), i % 3, 1.0] for i, t in enumerate(batch)], np.float32)

    def dies_on_third_chunk(batch):
        if len(seen) >= 10:
            raise KeyboardInterrupt
        return encode(batch)

    with pytest.raises(KeyboardInterrupt):
        encode_in_chunks(dies_on_third_chunk, texts, tmp_path / "chunks", "key-1", 3, chunk_size=5, progress=False)
    assert len(list((tmp_path / "chunks").glob("*.npy"))) == 2
    seen.clear()
    out = encode_in_chunks(encode, texts, tmp_path / "chunks", "key-1", 3, chunk_size=5, progress=False)
    assert seen == texts[10:]  # only the missing chunks were embedded
    seen.clear()
    full = encode_in_chunks(encode, texts, tmp_path / "other", "key-1", 3, chunk_size=5, progress=False)
    np.testing.assert_array_equal(out[10:], full[10:])
    seen.clear()
    encode_in_chunks(encode, texts, tmp_path / "chunks", "key-2", 3, chunk_size=5, progress=False)
    assert seen == texts  # another model or corpus: chunks discarded


def test_embedding_progress_moves_per_batch_and_rows_stay_in_corpus_order(tmp_path):
    from leanpremise.export.corpus_embeddings import encode_in_chunks

    texts = [f"t{'x' * (i * 7 % 5)}{i}" for i in range(11)]  # lengths out of order
    calls: list[list[str]] = []

    def encode(batch):
        calls.append(list(batch))
        return np.array([[float(t[-2:].lstrip("tx") or 0), len(t), 1.0] for t in batch], np.float32)

    out = encode_in_chunks(encode, texts, tmp_path / "c", "k", 3, chunk_size=5, progress=False, batch_size=2)
    assert [len(c) for c in calls] == [2, 2, 1, 2, 2, 1, 1]  # per batch within each chunk of 5, 5, 1
    assert all(len(c[0]) >= len(c[-1]) for c in calls)  # longest first, as sentence-transformers batches
    np.testing.assert_array_equal(out, encode(texts))  # every row where its text is


def test_revision_slug_makes_ntp_toolkit_revisions_ref_safe():
    from leanpremise.bundle.layout import revision_slug

    assert revision_slug("v4.22.0") == "v4.22.0"
    slug = revision_slug("mathlib4@f4a7 batteries@45f6 lean4:v4.33.0-rc1")
    assert slug == "mathlib4_f4a7_batteries_45f6_lean4_v4.33.0-rc1"


def test_push_without_network_fails_with_a_clear_message(exported, tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_dummy",
           "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--out", str(exported), "--push",
                           "--model_repo", "someone/tiny-lean", "--data_repo", "someone/lean-premises"],
                          env=env, check=False, capture_output=True, text=True, timeout=LIVENESS_S)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "publishing to someone/tiny-lean failed while trying to create the repository" in proc.stderr
    assert f"could not reach the Hub at http://127.0.0.1:{port}" in proc.stderr


def test_push_needs_both_repositories(exported):
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--out", str(exported), "--push",
                           "--model_repo", "someone/x"], check=False, capture_output=True, text=True, timeout=LIVENESS_S)
    assert proc.returncode == 2 and "--data_repo" in proc.stderr


def test_publish_pushes_model_and_data_to_the_revision_branch(exported, monkeypatch):
    """Up to the wire: the calls huggingface_hub receives (a recording HfApi stands in for the Hub)."""
    import huggingface_hub

    from leanpremise.export.publish import DATA_PATTERNS, publish_bundle

    calls = []

    class RecordingApi:
        def __init__(self, **kw):
            calls.append(("init", kw.get("endpoint")))

        def create_repo(self, repo, **kw):
            calls.append(("create_repo", repo, kw["repo_type"]))

        def create_branch(self, repo, **kw):
            calls.append(("create_branch", repo, kw["branch"], kw["repo_type"]))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw["repo_id"], kw["repo_type"], kw["revision"], Path(kw["folder_path"]),
                          kw["allow_patterns"]))
            return type("Info", (), {"commit_url": f"https://hub/{kw['repo_id']}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    urls = publish_bundle(exported, "me/model", "me/data")
    assert urls == {"model": "https://hub/me/model/commit/1", "data": "https://hub/me/data/commit/1"}
    assert ("create_branch", "me/model", "v4.99.0", "model") in calls
    assert ("create_branch", "me/data", "v4.99.0", "dataset") in calls
    uploads = [c for c in calls if c[0] == "upload_folder"]
    assert uploads[0][1:5] == ("me/model", "model", "v4.99.0", exported / "model")
    assert uploads[1][1:6] == ("me/data", "dataset", "v4.99.0", exported, DATA_PATTERNS)
    assert json.loads((exported / "manifest.json").read_text())["revision"] == "v4.99.0"


def test_manifest_reads_unknown_keys_and_names_a_bad_field(exported, tmp_path):
    import shutil

    from leanpremise.bundle.layout import MANIFEST, BundleError
    from leanpremise.bundle.manifest import Manifest

    copy = tmp_path / "b"
    shutil.copytree(exported, copy)
    data = json.loads((copy / MANIFEST).read_text())
    assert Manifest.read(copy).to_json() == (copy / MANIFEST).read_bytes()  # what export wrote, byte for byte
    (copy / MANIFEST).write_text(json.dumps({**data, "from_a_newer_export": 1}))
    assert Manifest.read(copy).model_name == "tiny"
    (copy / MANIFEST).write_text(json.dumps({**data, "dimension": "wide"}))
    with pytest.raises(BundleError, match=r'manifest.json: field "dimension": Input should be a valid integer'):
        Manifest.read(copy)
    del data["embeddings"]
    (copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r'manifest.json: field "embeddings": missing'):
        Manifest.read(copy)


def test_the_manifest_s_corpus_keys_are_corpus_options_fields_with_their_defaults():
    """The manifest keeps its flat keys; each is a CorpusOptions field, default for default, so a bundle
    rebuilds its corpus with exactly the options the data layer reads."""
    import dataclasses

    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import CorpusOptions, DataConfig

    fields = {f.name: f for f in dataclasses.fields(CorpusOptions)}
    assert set(fields) == {"filter", "mathlib_only", "nameless"}
    for name, f in fields.items():
        assert Manifest.model_fields[name].annotation is bool and Manifest.model_fields[name].default == f.default
        assert next(g for g in dataclasses.fields(DataConfig) if g.name == name).metadata == f.metadata
    options = CorpusOptions(filter=False, mathlib_only=True, nameless=True)
    m = Manifest(model_name="m", revision="r", dimension=1, premise_count=0, unfiltered_premise_count=0,
                 module_count=0, embeddings="e.npy", **dataclasses.asdict(options))
    assert m.corpus_options() == options == DataConfig(**dataclasses.asdict(options)).corpus_options()


def test_a_dense_export_records_no_split_and_a_manifest_without_one_loads(exported, tmp_path):
    import dataclasses
    import shutil

    from leanpremise.bundle.layout import MANIFEST
    from leanpremise.bundle.manifest import Manifest, SplitRecord
    from leanpremise.data import DataConfig

    assert set(SplitRecord.model_fields) == {"split_seed", "n_valid", "n_test", "split_mode"}
    assert set(SplitRecord.model_fields) <= {f.name for f in dataclasses.fields(DataConfig)}  # the same names
    assert Manifest.read(exported).split is None  # nothing in a dense bundle depends on a split
    copy = tmp_path / "b"
    shutil.copytree(exported, copy)
    data = json.loads((copy / MANIFEST).read_text())
    del data["split"]  # as every export before it was recorded
    (copy / MANIFEST).write_text(json.dumps(data))
    assert Manifest.read(copy).split is None
    record = {"split_seed": 3, "n_valid": 10, "n_test": 20, "split_mode": "all"}
    (copy / MANIFEST).write_text(json.dumps({**data, "split": record}))
    assert Manifest.read(copy).split == SplitRecord(**record)
