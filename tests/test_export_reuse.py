"""`export --reuse`: a bundle of revision N+1 made from revision N's rows equals a full export of N+1; another
model reuses nothing; bundles written before text hashes were recorded still serve as a source."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_model, sample_closure
from leanpremise.bundle.manifest import Manifest
from leanpremise.bundle.verify import bundle_files
from leanpremise.data import DataConfig, load_corpus
from leanpremise.export.exporter import ExportConfig, export_bundle
from leanpremise.testing.revision_synth import Shares, synthesize

ROOTS = ["Batteries.Data.List.Basic", "Batteries.Data.Nat.Lemmas", "Batteries.Classes.Order"]
SHARES = Shares(rename=0.05, edit=0.05, delete_decl=0.02, add_decl=0.04, move=0.02, delete_module=0.1,
                add_module=0.1, decls_per_added_module=3)


@pytest.fixture(scope="module")
def revisions(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reuse-data")
    old = sample_closure(ROOTS, root / "old")
    new = root / "new"
    synthesize(old, new, seed=5, shares=SHARES)
    return old, new


def _export(model: Path, data: Path, out: Path, cache_dir: Path, **kw) -> Manifest:
    cfg = ExportConfig(model=str(model), out=out, data=DataConfig(data_dir=data, cache_dir=cache_dir), onnx=False,
                       model_name="tiny", progress=False, chunk_size=64, batch_size=16, **kw)
    return export_bundle(cfg)


@pytest.fixture(scope="module")
def bundles(revisions, tiny_model_dir, cache_dir, tmp_path_factory):
    """Revision N's bundle, N+1 exported in full, and N+1 exported with --reuse of N (through the CLI)."""
    old_data, new_data = revisions
    root = tmp_path_factory.mktemp("reuse-bundles")
    old = root / "old"
    _export(tiny_model_dir, old_data, old, cache_dir)
    full = root / "full"
    _export(tiny_model_dir, new_data, full, cache_dir)
    reused = root / "reused"
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(tiny_model_dir),
                           "--data_dir", str(new_data), "--out", str(reused), "--no-onnx", "--model_name", "tiny",
                           "--reuse", str(old)], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return old, full, reused, json.loads(proc.stdout.strip().splitlines()[-1])


def _texts(data: Path, cache_dir: Path) -> list[str]:
    return list(load_corpus(DataConfig(data_dir=data, cache_dir=cache_dir)).texts)


def _rows(bundle: Path) -> np.ndarray:
    return np.load(bundle / Manifest.read(bundle).embeddings)


def test_reuse_export_equals_a_full_export(bundles, revisions, cache_dir):
    old, full, reused, printed = bundles
    old_texts, new_texts = (_texts(d, cache_dir) for d in revisions)
    known = {t: i for i, t in enumerate(old_texts)}
    fresh = [i for i, t in enumerate(new_texts) if t not in known]
    assert 0 < len(fresh) < len(new_texts) // 4  # the synthetic revision changed some premises, not most

    m = Manifest.read(reused)
    assert (m.reuse.reused, m.reuse.embedded) == (len(new_texts) - len(fresh), len(fresh))
    assert m.reuse.sources == [str(old)] and m.reuse.other_model == []
    assert (printed["reused"], printed["embedded"]) == (m.reuse.reused, m.reuse.embedded)
    assert Manifest.read(full).reuse is None

    old_rows, full_rows, new_rows = _rows(old), _rows(full), _rows(reused)
    assert new_rows.shape == full_rows.shape == (len(new_texts), 32)
    for i, t in enumerate(new_texts):
        if t in known:  # copied bit for bit
            assert new_rows[i].tobytes() == old_rows[known[t]].tobytes()
    np.testing.assert_allclose(new_rows[fresh], full_rows[fresh], atol=1e-5, rtol=0)
    np.testing.assert_allclose(new_rows, full_rows, atol=1e-5, rtol=0)

    sums_full, _ = bundle_files(full)
    sums_reused, _ = bundle_files(reused)
    assert sums_full.keys() == sums_reused.keys()
    differing = {rel for rel in sums_full if sums_full[rel] != sums_reused[rel]}
    assert differing <= {m.embeddings}  # model, premises archive and text hashes are the same bytes
    assert Manifest.read(full).model_identity == m.model_identity == Manifest.read(old).model_identity != ""


def test_a_different_model_reuses_nothing(bundles, revisions, cache_dir, tmp_path, caplog):
    old, full, _, _ = bundles
    other_model = build_tiny_model(tmp_path / "cls-model", pooling="cls")
    caplog.set_level(logging.INFO, logger="leanpremise")
    m = _export(other_model, revisions[1], tmp_path / "b", cache_dir, reuse=[old])
    assert (m.reuse.reused, m.reuse.embedded) == (0, m.premise_count)
    assert m.reuse.other_model == [str(old)]
    said = [r.getMessage() for r in caplog.records if "another model" in r.getMessage()]
    assert len(said) == 1 and str(old) in said[0] and "nothing reused" in said[0]
    assert m.model_identity != Manifest.read(full).model_identity


def test_a_bundle_without_recorded_identity_and_hashes_still_serves(bundles, revisions, cache_dir, tmp_path):
    """An older export's bundle (no `model_identity`, no text hashes): identity from its model/, texts from
    its premises archive, the same rows reused."""
    old, _, reused, _ = bundles
    legacy = tmp_path / "legacy"
    shutil.copytree(old, legacy)
    manifest = json.loads((legacy / "manifest.json").read_text())
    (legacy / manifest["text_hashes"]).unlink()
    for key in ("checksums", "sizes"):
        del manifest[key][manifest["text_hashes"]]
    for key in ("model_identity", "text_hashes"):
        del manifest[key]
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    assert Manifest.read(legacy).model_identity == "" and Manifest.read(legacy).text_hashes is None

    out = tmp_path / "again"
    m = _export(Path(Manifest.read(reused).source_model), revisions[1], out, cache_dir, reuse=[legacy])
    assert (m.reuse.reused, m.reuse.embedded) == (Manifest.read(reused).reuse.reused,
                                                  Manifest.read(reused).reuse.embedded)
    assert _rows(out).tobytes() == _rows(reused).tobytes()


def test_several_sources_and_a_second_reuse_embeds_nothing(bundles, revisions, cache_dir, tmp_path):
    old, full, _, _ = bundles
    m = _export(Path(Manifest.read(full).source_model), revisions[1], tmp_path / "b", cache_dir,
                reuse=[old, full])
    assert (m.reuse.reused, m.reuse.embedded) == (m.premise_count, 0)
    assert m.reuse.sources == [str(old), str(full)]


def test_reuse_refuses_a_missing_source_before_writing(revisions, tiny_model_dir, cache_dir, tmp_path):
    from leanpremise.bundle.layout import BundleError

    with pytest.raises(BundleError, match="nope"):
        _export(tiny_model_dir, revisions[1], tmp_path / "b", cache_dir, reuse=[tmp_path / "nope"])
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_the_model_identity_is_the_manifest_s_or_computed_from_the_model_dir(tiny_model_dir, monkeypatch):
    """One fallback for the server's row pools, its persistent cache and `export --reuse`."""
    from types import SimpleNamespace

    from leanpremise.bundle.manifest import bundle_model_identity
    from leanpremise.model import identity

    computed = identity.model_identity(tiny_model_dir)
    assert bundle_model_identity(SimpleNamespace(model_identity=""), tiny_model_dir) == computed
    assert bundle_model_identity(SimpleNamespace(), tiny_model_dir) == computed  # a manifest without the field
    monkeypatch.setattr(identity, "model_identity", lambda d: pytest.fail("hashed a recorded identity"))
    assert bundle_model_identity(SimpleNamespace(model_identity="abc"), tiny_model_dir) == "abc"


def test_a_bundle_s_corpus_is_rebuilt_with_its_manifest_s_options(revisions, cache_dir):
    from leanpremise.bundle.corpus import bundle_corpus

    old_data, _ = revisions
    base = Manifest(model_name="m", revision="r", dimension=1, premise_count=0, unfiltered_premise_count=0,
                    module_count=0, embeddings="e.npy")
    for options in ({}, {"filter": False}, {"nameless": True}, {"mathlib_only": True}):
        manifest = base.model_copy(update=options)
        want = load_corpus(DataConfig(data_dir=old_data, cache_dir=cache_dir, **options))
        got = bundle_corpus(manifest, old_data, cache_dir)
        assert got.names == want.names and got.texts == want.texts, options


# ---- tampered reuse sources (issue 22): verified like serve verifies, rows finite, identity from files -------


def _tampered(old: Path, where: Path, edit, reseal: bool) -> Path:
    """A copy of `old` whose embeddings `edit` changed; `reseal`: its manifest's checksum and size rewritten to
    match (a tamperer who edits the manifest too), else left as exported."""
    copy = where / "tampered"
    shutil.copytree(old, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    emb_path = copy / manifest["embeddings"]
    rows = np.load(emb_path)
    np.save(emb_path, edit(rows.copy()))
    if reseal:
        checksums, sizes = bundle_files(copy)
        manifest["checksums"], manifest["sizes"] = checksums, sizes
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _nan_row(rows):
    rows[3] = np.nan
    return rows


def _negated(rows):
    return -rows


def _swapped(rows):
    rows[[0, 1]] = rows[[1, 0]]
    return rows


@pytest.mark.parametrize("edit", [_nan_row, _negated, _swapped], ids=["nan", "negated", "swapped"])
def test_reuse_refuses_a_source_whose_rows_were_edited(bundles, revisions, cache_dir, tmp_path, edit):
    """The issue's case: rows edited in an old bundle were reused silently and checksummed anew."""
    from leanpremise.bundle.layout import BundleError

    old = bundles[0]
    source = _tampered(old, tmp_path, edit, reseal=False)
    with pytest.raises(BundleError) as e:
        _export(Path(Manifest.read(old).source_model), revisions[1], tmp_path / "b", cache_dir, reuse=[source])
    assert "sha256 differs" in str(e.value) and Manifest.read(source).embeddings in str(e.value)
    assert not (tmp_path / "b").exists()


def test_reuse_refuses_a_resealed_source_holding_a_nan_row(bundles, revisions, cache_dir, tmp_path):
    from leanpremise.bundle.layout import BundleError

    old = bundles[0]
    source = _tampered(old, tmp_path, _nan_row, reseal=True)
    with pytest.raises(BundleError, match=r"NaN or infinite values \(the first, row 3\)"):
        _export(Path(Manifest.read(old).source_model), revisions[1], tmp_path / "b", cache_dir, reuse=[source])


def test_reuse_goes_by_the_source_s_model_files_not_its_manifest(bundles, revisions, cache_dir, tmp_path, caplog):
    """A source whose manifest claims another model identity is still recognised by its model files (and a
    manifest cannot make another model's rows pass: `test_a_different_model_reuses_nothing`)."""
    old, _, reused, _ = bundles
    source = tmp_path / "claims"
    shutil.copytree(old, source)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["model_identity"] = "model:sha256:" + "0" * 64
    (source / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING, logger="leanpremise")
    m = _export(Path(Manifest.read(reused).source_model), revisions[1], tmp_path / "b", cache_dir, reuse=[source])
    assert m.reuse.reused == Manifest.read(reused).reuse.reused
    assert any("going by the files" in r.getMessage() for r in caplog.records)


def test_serve_refuses_a_bundle_with_a_non_finite_row(bundles, cache_dir, tmp_path):
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_bundle

    bundle = _tampered(bundles[0], tmp_path, _nan_row, reseal=True)
    for fast in (False, True):
        with pytest.raises(BundleError) as e:
            load_bundle(bundle, cache_dir, fast=fast)
        assert "row 3" in str(e.value) and "\n" not in str(e.value)


def test_a_projects_bundle_reuses_the_library_rows_and_counts_usage_over_all_its_states(
        bundles, revisions, tiny_model_dir, cache_dir, tmp_path):
    """The documented path for one's own project: `export --reuse LIBRARY_BUNDLE --data_dir PROJECT` with
    usage over all the project's proof states; the manifest says which states the counts count."""
    from leanpremise.data import load_dataset
    from leanpremise.rank.fusion import FUSION_FILE, FusionSpec
    from leanpremise.rank.usage import usage_counts

    old, _full, _reused, _printed = bundles
    project = revisions[1]  # the library's modules (most of them unchanged) and modules of its own
    fusion = tmp_path / "fusion.json"
    fusion.write_bytes(FUSION_FILE.dump_json(FusionSpec(method="rrf", rankers=["dense", "usage"],
                                                        weights={"dense": 0.5, "usage": 0.5}, params={"k": 60})))
    out = tmp_path / "project"
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(tiny_model_dir),
                           "--data_dir", str(project), "--out", str(out), "--no-onnx", "--model_name", "tiny",
                           "--reuse", str(old), "--fusion", str(fusion), "--usage_states", "all"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = Manifest.read(out)
    ds = load_dataset(DataConfig(data_dir=project, cache_dir=cache_dir))
    assert manifest.usage_states == {"states": "all", "count": len(ds.states)}
    assert manifest.reuse.reused > manifest.reuse.embedded > 0
    counts = np.load(out / "hybrid" / "usage.npy")
    everything = usage_counts(ds, np.arange(len(ds.states)))
    train_only = usage_counts(ds, ds.split_ids("train"))
    assert counts.tolist() == everything.tolist() and counts.tolist() != train_only.tolist()
