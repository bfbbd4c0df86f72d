"""The revisions' lifecycle: load, activate, swap, retire, close, reload, SIGHUP.

`Server` is the one server of an app: settings, metrics, and the `RevisionTable` of the bundles served
(serve/revisions/table.py). It loads them (`start`, off the event loop), makes each servable (`activate`:
its model's embedding service, its search worker), swaps a new table in on reload (SIGHUP or
/admin/reload), and closes a retired revision once its last request is done. `RevisionRouter`
(serve/http/router.py), the app's outermost middleware, picks the revision a request addresses and holds
it while the request runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from leanpremise.serve.embedding.service import EmbeddingService
from leanpremise.serve.embedding.store import EmbeddingStore, open_server_store
from leanpremise.serve.http.schemas import request_model
from leanpremise.serve.prometheus import Metrics
from leanpremise.serve.revisions.table import LoadedRevision, Revision, RevisionTable, SharedEmbedder
from leanpremise.serve.runtime import (
    limit_blas_threads,
    limit_torch_threads,
    release_free_memory,
    scan_shards,
    text_bound,
)
from leanpremise.serve.search.batcher import SearchBatcher
from leanpremise.serve.search.ranking import DenseRanking, Ranking, RankingKind, RankingSettings, Workers
from leanpremise.serve.settings import ServeConfig

logger = logging.getLogger(__name__)


class Server:
    """The server: settings, metrics, the table of revisions; `ready` flips once the first table exists."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.ready = False
        self.error: str | None = None
        self.on_load_failed = None
        self.table = RevisionTable({}, None)
        self.embedders: dict[str, SharedEmbedder] = {}
        self.pools: dict[str, object] = {}
        self.stores: dict[str, EmbeddingStore] = {}
        """The persistent embedding stores open, by location: each opened once (LMDB forbids opening one
        environment twice in a process), shared by every model's service, closed when the server stops."""
        self.strings: dict[str, str] = {}
        """Names, kinds and modules of the corpora served, each distinct string once (see
        Corpus.for_serving); rebuilt from the revisions served after every reload (`prune`), so strings
        of dropped or failed bundles do not pile up."""
        self.loading: list[str] = []
        self.request_model = request_model(config)
        self.import_mask_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="import-masks")
        self.lexical_pool = ThreadPoolExecutor(max_workers=config.lexical_threads, thread_name_prefix="lexical")
        self.search_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self._reload_lock: asyncio.Lock | None = None
        self._search_threads: int | None = None

    # ---- loading ---------------------------------------------------------------------------------

    def plan(self):
        """(the bundles to serve, tagged; the default tag): the settings' bundle list, read now."""
        from leanpremise.serve.revisions.plan import BundleSpec, plan_revisions

        if self.config.bundle is None:  # from the Hub: one revision, read once
            return [BundleSpec(path=None, manifest=None, tag="hub")], "hub"
        return plan_revisions(self.config)

    def load(self):
        """Blocking: the bundle list, then each bundle (index, embedder); returns what `start` activates."""
        specs, default = self.plan()
        return [self.load_one(spec) for spec in specs], default

    def load_one(self, spec):
        """Blocking: one bundle, its rows added to its model's pool, its model's embedders made unless a
        revision of the same model already has them."""
        from leanpremise.bundle.manifest import bundle_model_identity
        from leanpremise.serve.embedding.backends import make_embedders
        from leanpremise.serve.revisions.loader import load_bundle, load_from_hub
        from leanpremise.serve.revisions.plan import BundleSpec, derived_tag
        from leanpremise.serve.search.index import PremiseIndex
        from leanpremise.serve.search.row_pool import RowPool

        cfg = self.config
        t0 = time.perf_counter()
        if spec.path is not None:
            bundle = load_bundle(spec.path, cfg.data_dir, verify=cfg.verify, fast=cfg.fast_verify,
                                 limits=cfg.archive_limits())
        else:
            bundle = load_from_hub(cfg.data_repo, cfg.data_revision, cfg.model_id, cfg.model_revision, cfg.data_dir,
                                   verify=cfg.verify, fast=cfg.fast_verify, limits=cfg.archive_limits(),
                                   allow_unverified=cfg.allow_unverified_hub)
            spec = BundleSpec(path=None, manifest=bundle.manifest, tag=derived_tag(bundle.manifest))
        ranking = load_ranking(bundle, spec.tag, cfg)
        if self._search_threads is None:
            self._search_threads = limit_blas_threads(cfg.search_threads)
        key = bundle_model_identity(bundle.manifest, bundle.model_dir)
        pool = self.pools.setdefault(key, RowPool(cfg.dtype, self._search_threads, scan_shards(cfg.scan_shards)))
        rows = pool.add(bundle.embeddings)
        try:
            bundle.corpus.for_serving(self.strings)
            index = PremiseIndex(bundle.corpus, None, cfg.dtype, self._search_threads, rows=rows,
                                 mask_cache_entries=cfg.import_mask_cache_entries)
            shared = self.embedders.get(key)
            if shared is None:
                limit_torch_threads(cfg, self._search_threads)
                embedders, background = make_embedders(cfg, bundle)
                if embedders[0].dim != index.dim:
                    raise ValueError(f"the model embeds in dimension {embedders[0].dim}, the index in {index.dim}")
                shared = SharedEmbedder(key, embedders, background, text_bound(embedders[0], bundle,
                                                                                 cfg.chars_per_token))
                self.embedders[key] = shared  # the next bundle of this model, loaded before activation, shares it
        except BaseException:
            self.unload(rows)  # a bundle that failed leaves no rows pooled
            raise
        bundle.embeddings = None  # the pool holds the rows (possibly at half precision)
        release_free_memory()
        seconds = time.perf_counter() - t0
        logger.info("%s: loaded %d premises (%d modules; %d rows shared with other revisions), %s embedder "
                    "x%d%s, in %.1fs", spec.tag, index.size, len(index.indexed_modules), rows.reused,
                    shared.embedders[0].name, len(shared.embedders),
                    " + 1 in the background" if shared.background is not None else "", seconds)
        return LoadedRevision(spec, bundle, index, ranking, shared, seconds)

    def unload(self, rows) -> None:
        """Give back the pool rows of a bundle that was loaded but will not be served (its load or its
        activation failed), and forget pools left without rows."""
        rows.release()
        for key, pool in list(self.pools.items()):
            if not pool.segments and not (key in self.embedders and self.embedders[key].users):
                del self.pools[key]

    def prune(self) -> None:
        """Rebuild the shared-strings table from the revisions served now (a retired revision still
        serving its last requests keeps its own strings; only the sharing with later loads is lost)."""
        strings: dict[str, str] = {}
        for rev in self.table.revisions.values():
            corpus = rev.index.corpus
            for values in (corpus.unfiltered_names, corpus.kinds, corpus.modules):
                for v in values:
                    strings.setdefault(v, v)
        self.strings = strings

    async def activate(self, loaded: LoadedRevision) -> Revision:
        """A loaded bundle made servable: its model's embedding service started (once per model), its
        search worker started."""
        bundle, shared = loaded.bundle, loaded.shared
        self.embedders.setdefault(shared.key, shared)  # dropped meanwhile if its last revision closed
        if shared.service is None:
            opened = await asyncio.get_running_loop().run_in_executor(
                None, open_server_store, self.config, bundle, shared.embedders[0], self.stores)
            store, key = opened or (None, "")
            if store is not None:
                store.on_rejected = self._count_rejected("redis" if store.where.startswith(("redis", "unix"))
                                                         else "lmdb")
            service = EmbeddingService(shared.embedders, self.config, metrics=self.metrics,
                                       background=shared.background, store=store, store_key=key)
            service.cache.on_rejected = self._count_rejected("memory")
            try:
                await service.start()
            except BaseException:
                with contextlib.suppress(Exception):  # a service that did not start is not kept half-started
                    await service.stop()
                raise
            shared.service = service
        shared.users += 1
        search = SearchBatcher(loaded.index, self.search_executor, self.config.max_queries_per_search, self.metrics)
        rev = Revision(loaded, Workers(self.import_mask_pool, self.lexical_pool, search), self.config)
        await search.start()
        return rev

    def _count_rejected(self, cache: str):
        """A hook counting a cache's turned-down vectors in /metrics, by cache and reason."""
        return lambda reason, n: self.metrics.cache_rejected.labels(cache, reason).inc(n)

    def swap(self, revisions: dict[str, Revision], default: str) -> RevisionTable:
        """Serve `revisions` from now on; revisions of the old table not in it close once idle."""
        old, self.table = self.table, RevisionTable(revisions, default)
        for tag, rev in old.revisions.items():
            if revisions.get(tag) is not rev:
                self.retire(rev)
        served = revisions[default]  # the gauges describe the revision / answers
        self.metrics.indexed.set(served.index.size)
        self.metrics.load_seconds.set(served.load_seconds)
        return old

    def retire(self, rev: Revision) -> None:
        rev.retired = True
        if rev.active == 0:
            asyncio.get_running_loop().create_task(self.close(rev))

    def release(self, rev: Revision) -> None:
        """A request on `rev` finished; the last one on a retired revision closes it."""
        rev.active -= 1
        if rev.retired and rev.active == 0:
            asyncio.get_running_loop().create_task(self.close(rev))

    async def close(self, rev: Revision) -> None:
        """Stop a retired revision's search worker, give back its pool rows and, if it was the last
        revision of its model, the model's embedding service."""
        if rev.closed:
            return
        rev.closed = True
        await rev.workers.search.stop()
        rev.index.rows.release()
        shared = rev.shared
        shared.users -= 1
        if shared.users == 0 and self.embedders.get(shared.key) is shared:
            del self.embedders[shared.key]
            self.pools.pop(shared.key, None)
            # taken off `shared` before it stops: a revision of the same model being loaded meanwhile (a
            # reload) already holds `shared`, and its activation starts a new service instead of using this one
            service, shared.service = shared.service, None
            await service.stop()
        logger.info("%s: revision dropped", rev.tag)

    async def start(self) -> None:
        """Load off the event loop, then start the embedding and search workers; a failure is kept for
        /health and handed to `on_load_failed` (the CLI stops uvicorn)."""
        self._reload_lock = asyncio.Lock()
        try:
            loaded, default = await asyncio.get_running_loop().run_in_executor(None, self.load)
            revisions = {}
            for item in loaded:
                rev = await self.activate(item)
                revisions[rev.tag] = rev
            if default not in revisions:  # the Hub's single revision gets its tag once loaded
                default = next(iter(revisions))
            self.swap(revisions, default)
            self.ready = True
            self.metrics.ready.set(1)
        except Exception as e:  # noqa: BLE001 - reported on /health and to the launcher
            self.error = f"{type(e).__name__}: {e}"
            logger.error("loading failed: %s", self.error)
            if self.on_load_failed is not None:
                self.on_load_failed(e)

    async def reload(self) -> RevisionTable:
        """Re-read the bundle list; load new and changed bundles in the background (the old table serves
        meanwhile), then swap. A failure leaves the old table serving and is raised."""
        if not self.ready or self.config.bundle is None:
            raise ReloadFailed("nothing to reload: the server is still loading, or serves from the Hub")
        loop = asyncio.get_running_loop()
        async with self._reload_lock:
            try:
                specs, default = await loop.run_in_executor(None, self.plan)
            except Exception as e:
                raise ReloadFailed(f"{type(e).__name__}: {e}") from e
            current = self.table.revisions
            kept = {s.tag: current[s.tag] for s in specs
                    if s.tag in current and s.same_bundle(current[s.tag].spec)}
            added: dict[str, Revision] = {}
            try:
                for spec in specs:
                    if spec.tag not in kept:
                        self.loading.append(spec.tag)
                        loaded = await loop.run_in_executor(None, self.load_one, spec)
                        try:
                            added[spec.tag] = await self.activate(loaded)
                        except BaseException:
                            self.unload(loaded.index.rows)  # loaded, never served: its rows go back
                            raise
            except Exception as e:
                for rev in added.values():
                    self.retire(rev)
                for key, shared in list(self.embedders.items()):
                    if shared.users == 0 and shared.service is None:  # made for a bundle that failed
                        del self.embedders[key]
                        if key in self.pools and not self.pools[key].segments:
                            del self.pools[key]
                self.prune()
                raise ReloadFailed(f"{type(e).__name__}: {e}") from e
            finally:
                self.loading.clear()
            self.swap({s.tag: kept.get(s.tag) or added[s.tag] for s in specs}, default)
            self.prune()
            logger.info("reloaded: serving %s (default %s); %d loaded, %d kept", ", ".join(self.table.revisions),
                        default, len(added), len(kept))
            return self.table

    async def stop(self) -> None:
        for rev in list(self.table.revisions.values()):
            await rev.workers.search.stop()
        for shared in list(self.embedders.values()):
            if shared.service is not None:
                await shared.service.stop()  # flushes its store writes: the stores close after
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.import_mask_pool.shutdown(wait=False, cancel_futures=True)
        self.lexical_pool.shutdown(wait=False, cancel_futures=True)
        self.search_executor.shutdown(wait=False, cancel_futures=True)


class ReloadFailed(Exception):
    """A reload could not read the bundle list or load a bundle; the revisions served stay as they were."""


def watch_sighup(server: Server) -> bool:
    """SIGHUP reloads the bundle list (the event loop must run in the main thread, as under the CLI; a
    server run in a thread, as in tests, has no signal handler and reloads by its admin route)."""
    if not hasattr(signal, "SIGHUP"):
        return False

    def on_hup():
        task = asyncio.ensure_future(server.reload())
        task.add_done_callback(_log_reload)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def _log_reload(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("reload failed, still serving the revisions loaded before: %s", task.exception())


_OFF_THE_HUB = {
    RankingKind.FUSED: "a hybrid bundle from the Hub is served dense only (the lexical files are read from bundle dirs)",
    RankingKind.RERANKED: ("a bundle with a reranker from the Hub is served without it (its files are read from "
                           "bundle dirs)"),
}


def load_ranking(bundle, tag: str, cfg: ServeConfig) -> Ranking:
    """The ranking a bundle is served with, picked once here: its reranker where it has one and RERANK is on,
    else its fusion where it has one and FUSION is on, else the dense search alone. A bundle from the Hub has
    no dir to read their files from, and is served dense (one warning line for each it carries)."""
    from leanpremise.serve.search.fused import FusedRanking
    from leanpremise.serve.search.reranked import RerankedRanking

    carried = [kind for kind, there, on in ((RankingKind.FUSED, bundle.manifest.hybrid, cfg.fusion),
                                            (RankingKind.RERANKED, bundle.manifest.rerank, cfg.rerank)) if there and on]
    if bundle.root is None:
        for kind in carried:
            logger.warning("%s: %s", tag, _OFF_THE_HUB[kind])
        return DenseRanking()
    if not carried:
        return DenseRanking()
    settings = RankingSettings(cache_bytes=cfg.lexical_cache_max_bytes, rerank_limits=cfg.rerank_limits(),
                               verify=cfg.verify)
    ranking = RerankedRanking if RankingKind.RERANKED in carried else FusedRanking
    return ranking.load(bundle.root, bundle.manifest, bundle.corpus, settings)
