"""Several revisions in one server: tags and the default, rows shared across revisions (exact per
revision), one embedder per model, and a hot swap under continuous load."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import ThreadServer, build_data_dir, export_for_tests, service_config

# ---- tags and the default, from manifests --------------------------------------------------------


def manifest(data_revision: str, created: str = "2026-01-01T00:00:00Z"):
    from leanpremise.bundle.layout import revision_slug
    from leanpremise.bundle.manifest import Manifest

    return Manifest(model_name="m", revision=revision_slug(data_revision), dimension=4, premise_count=1,
                    unfiltered_premise_count=1, module_count=1, embeddings="embeddings/m.npy",
                    data_revision=data_revision, created=created)


@pytest.mark.parametrize("revision, tag", [
    ("mathlib4@0123abc batteries@4567def lean4:v4.33.0", "v4.33.0"),
    ("mathlib4@0123abc lean4:v4.33.0-rc1", "v4.33.0-rc1"),
    ("v4.32.0", "v4.32.0"),
    ("mathlib4@0123abc lean4:v4.33.0+synthetic.0", "v4.33.0"),
    ("lean4:v4.33.0x", "lean4_v4.33.0x"),
    ("mathlib4@0123abc", "mathlib4_0123abc"),
])
def test_tag_is_the_lean_version_else_the_revision_slug(revision, tag):
    from leanpremise.serve.revisions.plan import derived_tag

    assert derived_tag(manifest(revision)) == tag


def test_colliding_tags_get_a_suffix_and_explicit_tags_win():
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.plan import assign_tags, parse_tag_options

    bundles = [(Path("/b/one"), manifest("v4.33.0")), (Path("/b/two"), manifest("lean4:v4.33.0")),
               (Path("/b/three"), manifest("v4.32.0"))]
    assert [s.tag for s in assign_tags(bundles, {})] == ["v4.33.0", "v4.33.0-2", "v4.32.0"]
    named = assign_tags(bundles, parse_tag_options(["/b/two=stable"]))
    assert [s.tag for s in named] == ["v4.33.0", "stable", "v4.32.0"]
    with pytest.raises(BundleError, match="given to both"):
        assign_tags(bundles, parse_tag_options(["/b/one=x", "/b/two=x"]))
    for bad in ["/b/one=retrieve", "/b/one=a/b", "no-equals-sign"]:
        with pytest.raises(BundleError):
            parse_tag_options([bad])


def test_default_is_the_newest_lean_version_numerically_then_created():
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.plan import BundleSpec, default_tag

    def spec(rev, created="2026-01-01"):
        m = manifest(rev, created)
        return BundleSpec(path=Path(rev), manifest=m, tag=rev)

    specs = [spec("v4.10.0"), spec("v4.9.0"), spec("v4.10.0-rc2")]
    assert default_tag(specs, None) == "v4.10.0"  # 10 > 9, and a release after its rc
    assert default_tag([spec("a", "2026-02-01"), spec("b", "2026-03-01"), spec("c", "2026-01-01")], None) == "b"
    assert default_tag(specs, "v4.9.0") == "v4.9.0"
    with pytest.raises(BundleError, match="no such revision"):
        default_tag(specs, "v5.0.0")


def test_cli_takes_several_bundles_tags_and_a_default():
    from leanpremise.cli import ArgumentParser
    from leanpremise.serve.cli import config_from_args, register

    parser = ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "/b1", "/b2", "/b3", "--tag", "/b2=old", "--tag", "/b3=older",
                              "--default", "old", "--admin_reload"])
    cfg = config_from_args(args)
    assert (cfg.bundle, cfg.bundles) == (Path("/b1"), [Path("/b2"), Path("/b3")])
    assert (cfg.tags, cfg.default_revision, cfg.admin_reload) == (["/b2=old", "/b3=older"], "old", True)
    assert service_config().admin_reload is False


# ---- the shared row pool: exact per revision -----------------------------------------------------


def normed(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pooled_revisions_store_shared_rows_once_and_search_exactly(dtype):
    from leanpremise.serve.search.exact import ExactSearcher
    from leanpremise.serve.search.row_pool import RowPool

    rng = np.random.default_rng(0)
    base = normed(rng, 400)
    # revision 2: 20 rows deleted, 15 edited, 25 added, the order shuffled a little; one row duplicated
    keep = np.delete(np.arange(400), rng.choice(400, 20, replace=False))
    rev2 = base[keep].copy()
    rev2[rng.choice(len(rev2), 15, replace=False)] = normed(rng, 15)
    rev2 = np.concatenate([rev2, normed(rng, 25), rev2[:1]])
    rev2 = rev2[rng.permutation(len(rev2))]
    pool = RowPool(dtype)
    v1, v2 = pool.add(base), pool.add(rev2)
    assert pool.rows == 400 + 15 + 25 + 1 and v2.reused == len(rev2) - 41
    for view, emb in [(v1, base), (v2, rev2)]:
        alone = ExactSearcher(emb, dtype)
        queries = normed(rng, 5)
        for mask in [None, rng.random(len(emb)) < 0.3]:
            count = len(emb) if mask is None else int(mask.sum())
            for (s, i), (es, ei) in zip(view.topk(queries, mask, count, 10), alone.topk(queries, mask, count, 10)):
                np.testing.assert_array_equal(i, ei)
                np.testing.assert_allclose(s, es, rtol=0, atol=1e-6)
        ids = rng.permutation(len(emb))[:50]  # a reranker's candidates are scored from these rows
        np.testing.assert_array_equal(view.row_vectors(ids), alone.row_vectors(ids))
    v1.release()
    assert pool.rows == 400 + 41  # revision 2 still uses the first segment
    v2.release()
    assert pool.rows == 0


# ---- the server over a directory of bundles ------------------------------------------------------


def data_variant(root: Path, lean: str, extra: int = 0) -> Path:
    """The hand-made data dir at Lean version `lean`, with `extra` more declarations in one module."""
    from conftest import decl

    data = build_data_dir(root)
    (data / "revision").write_text(f"mathlib4@abc lean4:{lean}\n")
    with open(data / "Declarations" / "Mathlib.Order.Lattice.jsonl", "a") as fh:
        fh.writelines(json.dumps(decl(f"Lattice.new{j}", 500 + j, type_=f"x ⊔ y = y ⊔ x ∨ {j} = {j}")) + "\n"
                      for j in range(extra))
    return data


@pytest.fixture(scope="module")
def bundles(tiny_model_dir, cache_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("revisions")
    out = {}
    for name, lean, extra in [("a", "v4.97.0", 0), ("b", "v4.98.0", 2), ("a2", "v4.97.0", 5), ("c", "v4.99.0", 1)]:
        data = data_variant(root / f"data-{name}", lean, extra)
        out[name] = export_for_tests(tiny_model_dir, root / f"bundle-{name}", data, cache_dir)
    return out


def serve_dir(bundles: dict, names: list[str], where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(bundles[name], where / name)
    return where


def config(bundle_dir: Path, cache_dir: Path, **kw):
    return service_config(bundle=bundle_dir, backend="torch", data_dir=cache_dir, embed_workers=1, **kw)


def test_each_revision_at_its_tag_default_at_root_one_embedder(bundles, cache_dir, tmp_path):
    from leanpremise.serve.http.app import create_app

    cfg = config(serve_dir(bundles, ["a", "b"], tmp_path / "served"), cache_dir)
    app = create_app(cfg)
    srv = ThreadServer(app).start()
    try:
        revs = httpx.get(f"{srv.url}/revisions", timeout=LIVENESS_S).json()
        assert {r["tag"]: r["default"] for r in revs} == {"v4.97.0": False, "v4.98.0": True}
        assert len({r["model_identity"] for r in revs}) == 1
        by_tag = {r["tag"]: r for r in revs}
        assert by_tag["v4.98.0"]["premises"] == by_tag["v4.97.0"]["premises"] + 2
        from leanpremise.serve.revisions.loader import load_bundle

        # independent full exports can differ in the last bit of a row (other batches): only rows of a
        # premise whose bytes are the same in both bundles are shared
        la, lb = load_bundle(bundles["a"], cache_dir), load_bundle(bundles["b"], cache_dir)
        row_a = dict(zip(la.corpus.names, la.embeddings))
        same = sum(n in row_a and row_a[n].tobytes() == r.tobytes() for n, r in zip(lb.corpus.names, lb.embeddings))
        assert same >= by_tag["v4.97.0"]["premises"] - 3
        assert by_tag["v4.98.0"]["rows_shared"] == same
        a = httpx.get(f"{srv.url}/v4.97.0/indexed-premises", timeout=LIVENESS_S).json()
        b = httpx.get(f"{srv.url}/v4.98.0/indexed-premises", timeout=LIVENESS_S).json()
        assert set(b) - set(a) == {"Lattice.new0", "Lattice.new1"}
        assert httpx.get(f"{srv.url}/indexed-premises", timeout=LIVENESS_S).json() == b
        assert httpx.get(f"{srv.url}/v4.97.0/indexed-modules", timeout=LIVENESS_S).json() == httpx.get(f"{srv.url}/indexed-modules", timeout=LIVENESS_S).json()
        assert httpx.get(f"{srv.url}/v4.97.0/max-new-premises", timeout=LIVENESS_S).json() == cfg.max_new_premises
        assert httpx.get(f"{srv.url}/v4.97.0/health", timeout=LIVENESS_S).json()["tag"] == "v4.97.0"
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()["tag"] == "v4.98.0"
        query = {"state": "⊢ x ⊔ y = y ⊔ x", "k": 50}
        got_a = httpx.post(f"{srv.url}/v4.97.0/retrieve", json=query, timeout=LIVENESS_S).json()
        got_b = httpx.post(f"{srv.url}/v4.98.0/retrieve", json=query, timeout=LIVENESS_S).json()
        assert {r["name"] for r in got_b} - {r["name"] for r in got_a} == {"Lattice.new0", "Lattice.new1"}
        assert not {r["name"] for r in got_a} & {"Lattice.new0", "Lattice.new1"}
        server = app.state.server
        assert len(server.embedders) == 1  # one model, one embedding service for both revisions
        service = next(iter(server.embedders.values())).service
        premise = {"name": "Local.fresh", "decl": "theorem Local.fresh : 1 = 1"}
        httpx.post(f"{srv.url}/v4.97.0/retrieve", json={**query, "state": "⊢ fresh", "new_premises": [premise]}, timeout=LIVENESS_S)
        embedded = server.metrics.embedded._value.get()
        httpx.post(f"{srv.url}/v4.98.0/retrieve", json={**query, "state": "⊢ fresh", "new_premises": [premise]}, timeout=LIVENESS_S)
        assert server.metrics.embedded._value.get() == embedded  # served from the one cache
        assert len(service.cache) >= 2
        assert httpx.get(f"{srv.url}/v4.90.0/retrieve", timeout=LIVENESS_S).status_code == 404
        assert httpx.post(f"{srv.url}/admin/reload", timeout=LIVENESS_S).status_code == 404  # off by default
    finally:
        srv.stop()


def test_reload_under_load_adds_and_replaces_revisions_without_a_failed_request(bundles, cache_dir, tmp_path):
    from leanpremise.serve.http.app import create_app

    served = serve_dir(bundles, ["a", "b"], tmp_path / "served")
    app = create_app(config(served, cache_dir, admin_reload=True, admin_token="reload-token"))
    srv = ThreadServer(app).start()
    old_a = app.state.server.table.revisions["v4.97.0"]
    failures: list = []
    swapped = threading.Event()
    after_swap = threading.Semaphore(0)
    stop = threading.Event()
    seen_after: dict[str, set] = {}

    def client(path: str):
        with httpx.Client(base_url=srv.url, timeout=LIVENESS_S) as http:
            while not stop.is_set():
                was_swapped = swapped.is_set()
                r = (http.get(path) if path.endswith("premises") else
                     http.post(path, json={"state": "⊢ x ⊔ y = y ⊔ x", "k": 60}))
                if r.status_code != 200:
                    failures.append((path, r.status_code, r.text))
                    continue
                if was_swapped:
                    names = r.json() if path.endswith("premises") else [x["name"] for x in r.json()]
                    seen_after.setdefault(path, set()).update(names)
                    after_swap.release()

    paths = ["/v4.97.0/indexed-premises", "/v4.97.0/retrieve", "/retrieve", "/v4.98.0/retrieve"]
    threads = [threading.Thread(target=client, args=(p,)) for p in paths]
    try:
        for t in threads:
            t.start()
        # add v4.99.0 (copied under a hidden name, then renamed in) and replace v4.97.0 by a re-export
        shutil.copytree(bundles["c"], served / ".c-incoming")
        (served / ".c-incoming").rename(served / "c")
        shutil.copytree(bundles["a2"], served / ".a2-incoming")
        shutil.rmtree(served / "a")
        (served / ".a2-incoming").rename(served / "a")
        r = httpx.post(f"{srv.url}/admin/reload", timeout=LIVENESS_S,
                       headers={"Authorization": "Bearer reload-token"})
        assert r.status_code == 200, r.text
        swapped.set()
        assert {x["tag"]: x["default"] for x in r.json()} == {"v4.97.0": False, "v4.98.0": False, "v4.99.0": True}
        for _ in range(8 * len(paths)):
            assert after_swap.acquire(timeout=LIVENESS_S)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=LIVENESS_S)
        srv.stop()
    assert failures == []
    new_a = {f"Lattice.new{j}" for j in range(5)}
    assert new_a <= seen_after["/v4.97.0/indexed-premises"]  # the replacement answers after the swap
    assert seen_after["/v4.97.0/retrieve"] & new_a
    assert "Lattice.new0" in seen_after["/retrieve"]  # / now serves v4.99.0, which has Lattice.new0
    assert not seen_after["/v4.98.0/retrieve"] & {"Lattice.new2", "Lattice.new3", "Lattice.new4"}
    assert old_a.retired and old_a.closed  # the replaced revision was dropped once its requests finished


def test_sighup_reloads_the_bundle_list(bundles, cache_dir, tmp_path):
    """The event loop in the main thread, as under the CLI: SIGHUP re-reads the directory."""
    import asyncio
    import os
    import signal

    from leanpremise.serve.http.app import create_app

    served = serve_dir(bundles, ["a"], tmp_path / "served")
    app = create_app(config(served, cache_dir))
    server = app.state.server

    async def scenario():
        async with app.router.lifespan_context(app):
            while not server.ready:
                assert server.error is None, server.error
                await asyncio.sleep(0.05)
            assert list(server.table.revisions) == ["v4.97.0"]
            shutil.copytree(bundles["b"], served / "b")
            table = server.table
            os.kill(os.getpid(), signal.SIGHUP)
            while server.table is table:
                await asyncio.sleep(0.05)
            assert sorted(server.table.revisions) == ["v4.97.0", "v4.98.0"]
            assert server.table.default == "v4.98.0"
            assert server.table.revisions["v4.97.0"] is table.revisions["v4.97.0"]  # unchanged: kept

    asyncio.run(asyncio.wait_for(scenario(), timeout=LIVENESS_S))


# ---- reload hygiene (issue 22): a failed reload leaves nothing behind; shared strings pruned ---------------


def _server_state(server) -> dict:
    """What a reload could leave behind: pools (and their rows), embedders, shared strings, the table."""
    return {"pools": {key: pool.rows for key, pool in server.pools.items()},
            "segments": {key: len(pool.segments) for key, pool in server.pools.items()},
            "embedders": sorted(server.embedders), "strings": set(server.strings),
            "table": dict(server.table.revisions)}


def _broken_copy(bundle: Path, where: Path, dim_change: int) -> Path:
    """`bundle` made a new model's (its manifest's model identity changed, so nothing is shared) with rows
    of dimension dim + `dim_change`, resealed: it loads as far as its rows into a pool of its own."""
    from leanpremise.bundle.verify import bundle_files

    shutil.copytree(bundle, where)
    manifest = json.loads((where / "manifest.json").read_text())
    manifest["model_identity"] = "model:sha256:" + "f" * 64
    rows = np.load(where / manifest["embeddings"])
    if dim_change:
        wider = np.concatenate([rows, np.zeros((len(rows), dim_change), np.float32)], axis=1)
        np.save(where / manifest["embeddings"], wider)
        manifest["dimension"] = wider.shape[1]
    manifest["checksums"], manifest["sizes"] = bundle_files(where)
    (where / "manifest.json").write_text(json.dumps(manifest))
    return where


def _run_with_server(app, scenario):
    import asyncio

    server = app.state.server

    async def run():
        async with app.router.lifespan_context(app):
            while not server.ready:
                assert server.error is None, server.error
                await asyncio.sleep(0.05)
            await scenario(server)

    asyncio.run(asyncio.wait_for(run(), timeout=LIVENESS_S))


def test_a_reload_that_fails_after_pooling_its_rows_leaves_nothing_behind(bundles, cache_dir, tmp_path):
    """The bundle's rows are pooled and its strings shared before its model turns out to embed in another
    dimension: the reload fails, and pools, embedders, strings and the table are as before it."""
    from leanpremise.serve.http.app import create_app
    from leanpremise.serve.revisions.lifecycle import ReloadFailed

    served = serve_dir(bundles, ["a"], tmp_path / "served")
    app = create_app(config(served, cache_dir))

    async def scenario(server):
        before = _server_state(server)
        _broken_copy(bundles["b"], served / "b", dim_change=1)
        with pytest.raises(ReloadFailed, match="dimension"):
            await server.reload()
        assert _server_state(server) == before
        assert "Lattice.new0" not in server.strings  # b's own premise names went with it

    _run_with_server(app, scenario)


def test_a_reload_that_fails_while_activating_leaves_nothing_behind(bundles, cache_dir, tmp_path, monkeypatch):
    """Loaded (rows pooled, embedders made) but its embedding service fails to start: nothing stays."""
    from leanpremise.serve.embedding.service import EmbeddingService
    from leanpremise.serve.http.app import create_app
    from leanpremise.serve.revisions.lifecycle import ReloadFailed

    served = serve_dir(bundles, ["a"], tmp_path / "served")
    app = create_app(config(served, cache_dir))
    real_start = EmbeddingService.start

    async def scenario(server):
        before = _server_state(server)
        _broken_copy(bundles["b"], served / "b", dim_change=0)

        async def failing_start(self):
            raise RuntimeError("the embedding workers could not start")

        monkeypatch.setattr(EmbeddingService, "start", failing_start)
        with pytest.raises(ReloadFailed, match="could not start"):
            await server.reload()
        monkeypatch.setattr(EmbeddingService, "start", real_start)
        assert _server_state(server) == before
        (served / "b").rename(tmp_path / "b-aside")  # and the server still reloads normally
        shutil.copytree(bundles["c"], served / "c")
        await server.reload()
        assert sorted(server.table.revisions) == ["v4.97.0", "v4.99.0"]

    _run_with_server(app, scenario)


def test_shared_strings_are_pruned_across_reloads(bundles, cache_dir, tmp_path):
    """Twenty add/remove cycles: the shared-strings table holds what the revisions served hold, not every
    string ever loaded, and the pools the rows of the revisions served."""
    from leanpremise.serve.http.app import create_app

    served = serve_dir(bundles, ["a"], tmp_path / "served")
    app = create_app(config(served, cache_dir))

    async def scenario(server):
        await server.reload()
        base = _server_state(server)
        for cycle in range(20):
            shutil.copytree(bundles["a2" if cycle % 2 else "b"], served / "x")
            await server.reload()
            assert len(server.table.revisions) == 2
            shutil.rmtree(served / "x")
            await server.reload()
            for _ in range(100):  # retired revisions close once idle, on tasks of their own
                if _server_state(server)["pools"] == base["pools"]:
                    break
                await asyncio.sleep(0.05)
            state = _server_state(server)
            assert state["strings"] == base["strings"] and state["pools"] == base["pools"], cycle
            assert state["segments"] == base["segments"], cycle

    import asyncio

    _run_with_server(app, scenario)


def test_a_revision_loaded_while_the_last_of_its_model_closes_gets_a_running_embedding_service(bundles, cache_dir,
                                                                                               tmp_path):
    """Issue 28: a reload loads a new revision of a model (sharing its embedders) while the retired last
    revision of that model closes and stops their service; the new one must not be handed the stopped one."""
    import asyncio

    from leanpremise.serve.http.app import create_app

    served = serve_dir(bundles, ["a"], tmp_path / "served")

    async def scenario(server):
        old = server.table.revisions["v4.97.0"]
        loaded = await asyncio.get_running_loop().run_in_executor(None, server.load_one, old.spec)
        assert loaded.shared is old.shared  # the new revision shares the model's embedders
        stopped = old.shared.service
        await server.close(old)  # the last revision of the model closes meanwhile
        rev = await server.activate(loaded)
        assert rev.shared.service is not None and rev.shared.service is not stopped
        rows, _ = await asyncio.wait_for(rev.shared.service.embed(["⊢ after the race"], []), LIVENESS_S)
        assert rows.shape[0] == 1
        server.swap({"v4.97.0": rev}, "v4.97.0")

    _run_with_server(create_app(config(served, cache_dir)), scenario)
