"""One /retrieve request: clip and cut it, build its import mask while its goals embed, run its ranking's
lexical work (serve/search/ranking.py) while they still embed, search, and let the ranking finish."""

from __future__ import annotations

import asyncio

from leanpremise.serve.errors import LimitExceeded
from leanpremise.serve.search.lexical_budget import check_lexical_work
from leanpremise.serve.search.ranking import DenseFound, RankRequest


def cut(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` characters before it reaches the tokenizer, which would otherwise read all
    of it to keep its first max-sequence-length tokens; `max_chars` lies beyond what those tokens cover, so
    the embedding does not change."""
    return text[:max_chars]


def clip_new_premises(new_premises, limit: int) -> list:
    """Truncate to `limit`, then keep the first premise of each name (a later duplicate adds nothing)."""
    seen: set[str] = set()
    out = []
    for p in (new_premises or [])[:limit]:
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    return out


def check_results(n_states: int, k: int, limit: int) -> None:
    """Refuse a response of more than `limit` results before any work is done for it."""
    if n_states * k > limit:
        raise LimitExceeded("state", f"{n_states} states x k={k} asks for {n_states * k} results; "
                                     f"at most {limit} results per response (MAX_RESULTS)")


def open_request(rev, req) -> RankRequest | None:
    """The request as the rankers see it, refused (LimitExceeded, 422) before any work when it asks too
    much; None when there is nothing to rank (k 0 or no state). Every ranker sees the same cut texts, so
    the lexical rankers' work is bounded like the model's, and with lexical rankers (a fusion or a reranker)
    the request's characters for them are bounded by MAX_LEXICAL_WORK."""
    cfg = rev.config
    single = isinstance(req.state, str)
    states = [req.state] if single else list(req.state)
    k = min(req.k, cfg.max_k)
    if k <= 0 or not states:
        return None
    check_results(len(states), k, cfg.max_results)
    new = clip_new_premises(req.new_premises, cfg.max_new_premises)
    request = RankRequest(single, [cut(s, rev.max_text_chars) for s in states], k, [p.name for p in new],
                          [cut(p.decl, rev.max_text_chars) for p in new], req.imported_modules,
                          req.local_premises, bool(req.caller_in_module_system), req.imported_all_modules)
    if rev.ranking.uses_lexical:
        check_lexical_work(request.states, request.new_texts, cfg.max_lexical_work)
    return request


async def answer(rev, req):
    """The response body: a list of {name, score} (or one list per state when `req.state` is a list);
    `rev` is the revision that answers, `req` an instance of the server's request model
    (schemas.request_model). One orchestration for every ranking (serve/search/ranking.py): the import mask
    is built while the goals embed, the ranking's lexical work runs while they still embed, then the dense
    search (in the search worker) and the ranking's finish."""
    ranking, index, workers = rev.ranking, rev.index, rev.workers
    request = open_request(rev, req)
    if request is None:
        return []
    request = ranking.shape(request, index)
    loop = asyncio.get_running_loop()
    masking = loop.run_in_executor(workers.masks, index.import_mask, request.imported_modules,
                                   request.local_premises, request.caller_in_module_system,
                                   request.imported_all_modules, request.new_names)
    embedding = asyncio.ensure_future(rev.service.embed(request.states, request.new_texts)) if ranking.uses_dense \
        else None
    try:
        mask = await masking
    except BaseException as e:
        if embedding is not None:
            if isinstance(e, asyncio.CancelledError):  # the client went away: its queued chunks are dropped
                embedding.cancel()
            await asyncio.gather(embedding, return_exceptions=True)  # finish (or fail) as it would have alone
        raise
    preparing = loop.run_in_executor(workers.lexical, ranking.prepare, request, mask) if ranking.uses_lexical \
        else None  # in its own thread, while the goals embed
    found = None
    try:
        if embedding is not None:
            state_emb, new_emb = await embedding
            scores, ids = await workers.search.search(state_emb, mask, ranking.depth(request.k))
            found = DenseFound(state_emb, new_emb, scores, ids)
        prepared = await preparing if preparing is not None else None
    except BaseException:
        if preparing is not None:
            await asyncio.gather(preparing, return_exceptions=True)
        raise
    results = await ranking.finish(request, prepared, found, index, workers)
    return results[0] if request.single else results
