"""One /retrieve request: clip, build candidates, embed, search, merge new premises by score; with a
fusion (serve/search/fused.py), the lexical rankers run in their own threads while the states embed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from leanpremise.rank.runs import Run, merge_new
from leanpremise.serve.http.schemas import LimitExceeded
from leanpremise.serve.search.lexical_budget import check_lexical_work


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


def merge(index_names: np.ndarray, scores: np.ndarray, ids: np.ndarray, new_names: list[str],
          new_scores: np.ndarray, k: int) -> list[dict]:
    """Indexed top-k of one state and its new-premise scores, merged (`merge_new`: equal scores keep the
    indexed premises first), best first, at most k, as {name, score}."""
    n = len(index_names)
    top_ids, top_scores = merge_new(ids, scores, new_scores, n, k)
    return named(top_ids, top_scores, index_names, new_names, n)


def named(ids: np.ndarray, scores: np.ndarray, index_names, new_names: list[str], n: int) -> list[dict]:
    """A ranking of the shared id space (new premise j is id n + j; -1 ends it) as {name, score}."""
    out = []
    for i, s in zip(ids.tolist(), scores.tolist()):
        if i < 0:
            break
        out.append({"name": index_names[i] if i < n else new_names[i - n], "score": s})
    return out


def check_results(n_states: int, k: int, limit: int) -> None:
    """Refuse a response of more than `limit` results before any work is done for it."""
    if n_states * k > limit:
        raise LimitExceeded("state", f"{n_states} states x k={k} asks for {n_states * k} results; "
                                     f"at most {limit} results per response (MAX_RESULTS)")


@dataclass
class Opened:
    """What every ranker of one request sees: its states and new premises clipped and cut, its k."""

    single: bool
    states: list[str]
    k: int
    new_names: list[str]
    new_texts: list[str]


def open_request(rev, req) -> Opened | None:
    """The request as the rankers see it, refused (LimitExceeded, 422) before any work when it asks too
    much; None when there is nothing to rank (k 0 or no state). Every ranker sees the same cut texts, so
    the lexical rankers' work is bounded like the model's (issue 22), and with lexical rankers
    (a fusion or a reranker) the request's characters for them are bounded by MAX_LEXICAL_WORK."""
    cfg = rev.config
    single = isinstance(req.state, str)
    states = [req.state] if single else list(req.state)
    k = min(req.k, cfg.max_k)
    if k <= 0 or not states:
        return None
    check_results(len(states), k, cfg.max_results)
    new = clip_new_premises(req.new_premises, cfg.max_new_premises)
    opened = Opened(single, [cut(s, rev.max_text_chars) for s in states], k, [p.name for p in new],
                    [cut(p.decl, rev.max_text_chars) for p in new])
    if rev.fused is not None or rev.reranked is not None:
        check_lexical_work(opened.states, opened.new_texts, cfg.max_lexical_work)
    return opened


async def answer(rev, req):
    """The response body: a list of {name, score} (or one list per state when `req.state` is a list);
    `rev` is the revision that answers, `req` an instance of the server's request model
    (schemas.request_model)."""
    opened = open_request(rev, req)
    if opened is None:
        return []
    if rev.reranked is not None:  # the bundle's reranker orders the candidates instead
        from leanpremise.serve.search.reranked import answer_reranked

        return await answer_reranked(rev, req, opened)
    index, service, fused = rev.index, rev.service, rev.fused
    single, states, k = opened.single, opened.states, opened.k
    new_names, new_texts = opened.new_names, opened.new_texts
    loop = asyncio.get_running_loop()
    cand_future = loop.run_in_executor(
        rev.candidate_mask_pool, index.candidates, req.imported_modules, req.local_premises,
        bool(req.caller_in_module_system), req.imported_all_modules, new_names,
    )
    embedding = asyncio.ensure_future(service.embed(states, new_texts))
    try:
        cand = await cand_future
    except BaseException as e:
        if isinstance(e, asyncio.CancelledError):  # the client went away: its queued chunks are dropped
            embedding.cancel()
        await asyncio.gather(embedding, return_exceptions=True)  # finish (or fail) as it would have alone
        raise
    lexical = None
    if fused is not None:  # lexical ranking starts now, in its own threads, while the states embed
        lexical = loop.run_in_executor(rev.lexical_pool, fused.lexical, states, cand.mask, new_texts, new_names, k)
    try:
        state_emb, new_emb = await embedding
    except BaseException:
        if lexical is not None:
            await asyncio.gather(lexical, return_exceptions=True)
        raise
    depth = fused.depth(k) if fused is not None else k
    scores, ids = await rev.searcher.search(state_emb, cand, depth)
    new_scores = state_emb @ new_emb.T if new_names else np.zeros((len(states), 0), dtype=np.float32)
    if fused is None:
        results = [merge(index.names, scores[b], ids[b], new_names, new_scores[b], k) for b in range(len(states))]
    else:
        lexical_runs = await lexical
        results = [fuse_one(fused, index, scores[b], ids[b], new_names, new_scores[b], lexical_runs[b], k)
                   for b in range(len(states))]
    return results[0] if single else results


def fuse_one(fused, index, scores, ids, new_names, new_scores, lexical_runs, k) -> list[dict]:
    """One state's fused results as {name, score}, best first."""
    dense = Run.row("dense", *merge_new(ids, scores, new_scores, index.size, fused.depth(k)))
    top_ids, top_scores = fused.fuse(dense, lexical_runs, k)
    return named(top_ids, top_scores, index.names, new_names, index.size)
