"""Top-k accessible premises per state: chunked scoring, a vectorised accessibility mask, a top-k merge.

The corpus is scored in chunks so memory stays at (states x chunk) whatever
the corpus size; each chunk's inaccessible premises (and the declaration
itself) are set to -inf with `access.mask`, the chunk's top k is taken with
`torch.topk`, and merged into the running top k. Any scorer that can score a
chunk of the corpus (dot products, BM25) goes through the same merge.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from leanpremise.rank.runs import padded_topk, score_lookup

ChunkScorer = Callable[[slice, int, int], "object"]
"""(rows: positions of a batch in `state_ids`, lo, hi) -> (B, hi-lo) float32 scores (numpy or torch)."""


STATE_BATCH = 512
"""States ranked together. Fixed, not a setting: rankings do not depend on it (each state's top k is exact),
only memory does: one STATE_BATCH x chunk_size float32 score block (64 MiB at the default chunk), small
next to the corpus embeddings on any machine that holds them, and large enough for an efficient matmul."""


def _torch():
    import torch

    return torch


def rank_with_scorer(score_chunk: ChunkScorer, n_premises: int, access, state_ids: np.ndarray, k: int,
                     chunk_size: int = 32768, state_batch: int = STATE_BATCH,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B,k) int64 padded with -1, scores (B,k) float32), best first, accessible premises only."""
    torch = _torch()
    state_ids = np.asarray(state_ids, dtype=np.int64)
    n_states = len(state_ids)
    out_ids, out_scores = padded_topk((n_states, k))
    if n_states == 0 or k == 0 or n_premises == 0:
        return out_ids, out_scores
    batches = [(a, min(a + state_batch, n_states)) for a in range(0, n_states, state_batch)]
    chunks = [(lo, min(lo + chunk_size, n_premises)) for lo in range(0, n_premises, chunk_size)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batches) * len(chunks), desc="ranking", unit="chunk")
    with torch.inference_mode():
        for a, b in batches:
            batch = state_ids[a:b]
            best_s = torch.full((b - a, 0), -torch.inf, dtype=torch.float32)
            best_i = torch.zeros((b - a, 0), dtype=torch.int64)
            for lo, hi in chunks:
                scores = torch.as_tensor(score_chunk(slice(a, b), lo, hi), dtype=torch.float32)
                scores.masked_fill_(torch.from_numpy(access.mask(batch, lo, hi)).logical_not_(), -torch.inf)
                top_s, top_i = torch.topk(scores, min(k, hi - lo), dim=1, sorted=False)
                del scores
                cand_s = torch.cat([best_s, top_s], dim=1)
                cand_i = torch.cat([best_i, top_i + lo], dim=1)
                if cand_s.shape[1] > k:
                    cand_s, pick = torch.topk(cand_s, k, dim=1, sorted=False)
                    cand_i = torch.gather(cand_i, 1, pick)
                best_s, best_i = cand_s, cand_i
                if bar is not None:
                    bar.update()
            s, i = best_s.numpy(), best_i.numpy()
            order = np.lexsort((i, -s), axis=1)  # best first; equal scores by corpus id
            s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
            valid = np.isfinite(s)
            width = s.shape[1]
            out_scores[a:b, :width] = np.where(valid, s, -np.inf)
            out_ids[a:b, :width] = np.where(valid, i, -1)
    if bar is not None:
        bar.close()
    return out_ids, out_scores


def rank_premises(state_emb: np.ndarray, corpus_emb: np.ndarray, access, state_ids: np.ndarray, k: int,
                  chunk_size: int = 32768, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B,k) int64 padded with -1, scores (B,k) float32), best first, accessible premises only.

    Scores are dot products of the (normalised) embeddings; the corpus is searched
    in chunks with a vectorised accessibility mask (access.mask(state_ids, lo, hi))
    and a top-k merge.
    """
    torch = _torch()
    state_ids = np.asarray(state_ids, dtype=np.int64)
    if len(state_emb) != len(state_ids):
        raise ValueError(f"{len(state_emb)} state embeddings for {len(state_ids)} states")
    if len(state_emb) and state_emb.shape[1] != corpus_emb.shape[1]:
        raise ValueError(f"state embeddings have dimension {state_emb.shape[1]}, "
                         f"corpus embeddings {corpus_emb.shape[1]}: were they made by the same model?")
    queries = torch.from_numpy(np.ascontiguousarray(state_emb, dtype=np.float32))
    buffer = torch.empty((min(len(state_ids), STATE_BATCH), min(chunk_size, len(corpus_emb))), dtype=torch.float32)

    def score_chunk(rows: slice, lo: int, hi: int):
        # one reused output buffer: a fresh (states x chunk) tensor per chunk costs page faults
        chunk = torch.from_numpy(np.ascontiguousarray(corpus_emb[lo:hi], dtype=np.float32))
        q = queries[rows]
        return torch.mm(q, chunk.T, out=buffer[: len(q), : hi - lo])

    return rank_with_scorer(score_chunk, len(corpus_emb), access, state_ids, k, chunk_size=chunk_size,
                            state_batch=STATE_BATCH, progress=progress)




def dense_scores(query: np.ndarray, ids: np.ndarray, n: int, indexed_rows: Callable[[np.ndarray], np.ndarray],
                 new_rows: np.ndarray) -> np.ndarray:
    """The dot product of `query` with any id of a request's shared id space (indexed premises 0..n-1, read
    by `indexed_rows(ids)` at the precision they are searched at; new premise j is id n + j, row
    `new_rows[j]`), float64. A reranker reads the dense score of every candidate, listed or not: the server's
    search worker and evaluation both score them here, so both compute the same products."""
    ids = np.asarray(ids, dtype=np.int64)
    query = np.asarray(query, dtype=np.float32)
    out = np.empty(len(ids), dtype=np.float64)
    low = ids < n
    if low.any():
        out[low] = np.asarray(indexed_rows(ids[low]), dtype=np.float32) @ query
    if not low.all():
        out[~low] = np.asarray(new_rows, dtype=np.float32)[ids[~low] - n] @ query
    return out


def known_scores(ids: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A score lookup (`features.ScoreLookup`) of the ids scored already (`dense_scores` of them), NaN for
    any other id: what a reranker reads once the candidates' scores are in."""
    return score_lookup(ids, scores, np.nan)
