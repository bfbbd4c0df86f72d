"""A bundle with a static model: exported (no ONNX; the manifest says static), verified, served over real
HTTP by the numpy backend (goals embedded as the model's own encode embeds them), hot-reloaded, fused with
BM25; `--reuse` across a static and a transformer bundle copies no row."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import ThreadServer, export_for_tests, service_config
from static_models import build_static_model


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory) -> Path:
    return build_static_model(tmp_path_factory.mktemp("static") / "model", dim=32)


@pytest.fixture(scope="module")
def static_bundle(static_dir, serve_data_dir, cache_dir, tmp_path_factory) -> Path:
    """The static model's bundle of the serve data, asked for int8 too (which a static model ignores)."""
    return export_for_tests(static_dir, tmp_path_factory.mktemp("static-bundle") / "bundle", serve_data_dir,
                            cache_dir, onnx=True, int8=True, model_name="static")


def test_export_records_a_static_model_and_writes_no_onnx(static_bundle, static_dir, cache_dir):
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.bundle.verify import check_inventory, verify_bundle_files
    from leanpremise.model.static import StaticEncoder, model_type
    from leanpremise.serve.revisions.loader import load_bundle

    manifest = Manifest.read(static_bundle)
    assert manifest.model_type == "static" and model_type(static_bundle / "model") == "static"
    assert manifest.onnx is None and manifest.onnx_int8 is None
    assert not list(static_bundle.rglob("*.onnx"))
    check_inventory(static_bundle, manifest)
    verify_bundle_files(static_bundle, manifest)  # every file against its sha256
    loaded = load_bundle(static_bundle, cache_dir, verify=True)
    want = StaticEncoder(static_dir).encode(list(loaded.corpus.texts))
    np.testing.assert_array_equal(loaded.embeddings, want)  # the encoder the server runs, bit for bit


def test_a_manifest_without_a_model_type_loads_as_a_transformer(static_bundle):
    import json

    from leanpremise.bundle.manifest import Manifest

    data = json.loads((static_bundle / "manifest.json").read_text())
    del data["model_type"]
    assert Manifest.model_validate(data).model_type == "transformer"


def _retrieve(url: str, state: str, **extra) -> list[dict]:
    r = httpx.post(f"{url}/retrieve", json={"state": state, "k": 20} | extra, timeout=LIVENESS_S)
    assert r.status_code == 200, r.text
    return r.json()


def test_served_over_http_with_the_numpy_backend_and_hot_reloaded(static_bundle, static_dir, serve_data_dir,
                                                                 cache_dir, tmp_path):
    """Scores are the bundle's rows against the goal as the numpy encoder embeds it; the persistent cache
    keys the static backend by its own name; a new bundle of another revision is picked up by a reload."""
    from leanpremise.model.static import StaticEncoder
    from leanpremise.serve.http.app import create_app
    from leanpremise.serve.revisions.loader import load_bundle

    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(static_bundle, served / "a")
    cfg = service_config(bundle=served, data_dir=cache_dir, admin_reload=True, admin_token="t",
                         embedding_cache=tmp_path / "lmdb")
    app = create_app(cfg)
    srv = ThreadServer(app).start()
    try:
        health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
        assert (health["model_type"], health["backend"]) == ("static", "static-numpy")
        revisions = httpx.get(f"{srv.url}/revisions", timeout=LIVENESS_S).json()
        assert [r["model_type"] for r in revisions] == ["static"]
        loaded = load_bundle(static_bundle, cache_dir)
        row = dict(zip(loaded.corpus.names, loaded.embeddings))
        encoder = StaticEncoder(static_dir)
        state = "⊢ ∀ x y , x ⊔ y = y ⊔ x"
        got = _retrieve(srv.url, state)
        assert got
        goal = encoder.encode([state])[0]
        np.testing.assert_allclose([r["score"] for r in got], [row[r["name"]] @ goal for r in got], atol=1e-5)
        new = {"name": "Local.fresh", "decl": "theorem Local.fresh : a ⊔ b = b ⊔ a"}
        fresh = _retrieve(srv.url, state, new_premises=[new])
        by_name = {r["name"]: r["score"] for r in fresh}
        text = encoder.encode([state, new["decl"]])  # a new premise is embedded as its `decl`
        assert by_name["Local.fresh"] == pytest.approx(float(text[0] @ text[1]), abs=1e-5)
        many = [{"name": f"Local.p{i}", "decl": f"theorem Local.p{i} : {i} + x ≤ y ⊔ {i}"} for i in range(40)]
        scores = {r["name"]: r["score"] for r in _retrieve(srv.url, state, new_premises=many, k=200)}
        rows = encoder.encode([state] + [p["decl"] for p in many])  # more than an urgent chunk: several chunks
        for i, p in enumerate(many):
            if p["name"] in scores:
                assert scores[p["name"]] == pytest.approx(float(rows[0] @ rows[i + 1]), abs=1e-5)
        assert sum(p["name"] in scores for p in many) >= 20
        service = next(iter(app.state.server.embedders.values())).service
        assert service.store_key.endswith("|backend:static-numpy")

        from serve_helpers import build_data_dir

        data_b = build_data_dir(tmp_path / "data-b")
        (data_b / "revision").write_text("mathlib4@abc lean4:v4.100.0\n")
        export_for_tests(static_dir, tmp_path / "incoming", data_b, cache_dir)
        (tmp_path / "incoming").rename(served / "b")
        r = httpx.post(f"{srv.url}/admin/reload", headers={"Authorization": "Bearer t"}, timeout=LIVENESS_S)
        assert r.status_code == 200, r.text
        assert {x["tag"]: x["default"] for x in r.json()} == {"v4.99.0": False, "v4.100.0": True}
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()["tag"] == "v4.100.0"
        assert len(app.state.server.embedders) == 1  # one model: one embedding service for both revisions
        assert [x["score"] for x in _retrieve(srv.url, state)] == pytest.approx([x["score"] for x in got],
                                                                                  abs=1e-6)
    finally:
        srv.stop()


@pytest.mark.parametrize("direction", ["static-from-transformer", "transformer-from-static"])
def test_reuse_across_a_static_and_a_transformer_bundle_copies_no_row(static_bundle, static_dir, tiny_model_dir,
                                                                      serve_data_dir, cache_dir, tmp_path,
                                                                      direction):
    """Same corpus, other model type: the source is named as another model's, every row embedded anew, and
    the bundle equals a full export."""
    from leanpremise.bundle.manifest import Manifest

    transformer = export_for_tests(tiny_model_dir, tmp_path / "transformer", serve_data_dir, cache_dir)
    model, source = (static_dir, transformer) if direction.startswith("static") else (tiny_model_dir, static_bundle)
    full = static_bundle if direction.startswith("static") else transformer
    out = export_for_tests(model, tmp_path / "reused", serve_data_dir, cache_dir, reuse=[source],
                           model_name="static" if direction.startswith("static") else None)
    manifest = Manifest.read(out)
    assert manifest.reuse.reused == 0 and manifest.reuse.other_model == [str(source)]
    assert manifest.reuse.embedded == manifest.premise_count
    assert manifest.model_identity != Manifest.read(source).model_identity
    full_manifest = Manifest.read(full)
    np.testing.assert_allclose(np.load(out / manifest.embeddings), np.load(full / full_manifest.embeddings),
                               atol=1e-6)


def test_a_fused_static_bundle_fuses_the_numpy_ranking_with_bm25(static_dir, serve_data_dir, cache_dir, tmp_path):
    """`export --fusion` with a static model: the server fuses its numpy dense ranking with BM25 (the fused
    list is not the dense one, and every fused name is one of the two rankers' candidates)."""
    import json

    from leanpremise.serve.http.app import create_app

    fusion = tmp_path / "rrf.json"
    fusion.write_text(json.dumps({"method": "rrf", "rankers": ["static", "bm25"], "weights": {"static": 0.5,
                                  "bm25": 0.5}, "params": {"k": 60}, "k": 20}))
    bundle = export_for_tests(static_dir, tmp_path / "bundle", serve_data_dir, cache_dir, fusion=fusion,
                              model_name="static")
    lists = {}
    for arm, on in (("fused", True), ("dense", False)):
        srv = ThreadServer(create_app(service_config(bundle=bundle, data_dir=cache_dir, fusion=on))).start()
        try:
            health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
            assert health["model_type"] == "static" and (health["hybrid"] is not None) == on
            lists[arm] = [[r["name"] for r in _retrieve(srv.url, s, k=10)]
                          for s in ("⊢ a + b = b + a", "⊢ ∀ x y , x ⊔ y = y ⊔ x", "⊢ ¬¬p ↔ p")]
        finally:
            srv.stop()
    assert lists["fused"] != lists["dense"]
    assert all(len(row) == 10 for row in lists["fused"])



def test_an_onnx_backend_is_refused_for_a_static_bundle_in_one_line(static_bundle, cache_dir):
    from leanpremise.serve.embedding.backends import make_embedders
    from leanpremise.serve.revisions.loader import load_bundle

    bundle = load_bundle(static_bundle, cache_dir)
    with pytest.raises(FileNotFoundError, match="static model has no ONNX graph") as err:
        make_embedders(service_config(backend="onnx"), bundle)
    assert "\n" not in str(err.value)
    embedders, background = make_embedders(service_config(), bundle)  # auto: the numpy encoder, vectors shared
    assert {e.name for e in embedders} == {"static-numpy"} and background.vectors is embedders[0].vectors
