"""The nearest proved states' premises (MaSh's k-nearest-neighbours): a goal is scored against the proved
states of a training set by the cosine of their TF-IDF token vectors, and each premise scores the summed
similarity of the nearest `neighbours` states that used it.

It reads nothing of a premise's text, only which premises similar goals needed, so it finds the indexed
premises a held-out project's goals share with the library's (where BM25 and the dense model look at texts).
A request's new premises were used by no indexed state and score nothing. Work per goal is bounded: one
sparse product over the states holding the goal's tokens, a top-`neighbours` selection, and the union of
their premises.

Saved as plain arrays (npz, no pickle) and a JSON vocabulary with its parameters, beside a bundle's other
side rankers; `load` checks every array against the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from leanpremise.rank.lean_tokens import bm25_tokens
from leanpremise.rank.runs import padded_topk, score_lookup

ARRAYS_FILE = "nearest_states.npz"
PARAMS_FILE = "nearest_states.json"
FORMAT = 1


@dataclass
class NearestStatesConfig:
    neighbours: int = 64
    """Nearest training states whose premises score."""
    power: float = 1.0
    """Each neighbour adds its similarity to this power (higher: the nearest count more)."""


class NearestStates:
    """Training states as l2-normalised TF-IDF rows, and the index ids of the premises each state used."""

    def __init__(self, vocab: dict[str, int], idf: np.ndarray, rows: sp.csr_matrix, used_indptr: np.ndarray,
                 used: np.ndarray, keys: np.ndarray, n_premises: int, config: NearestStatesConfig):
        self.vocab, self.idf, self.rows = vocab, np.asarray(idf, dtype=np.float32), rows.tocsr()
        self.used_indptr, self.used = np.asarray(used_indptr, np.int64), np.asarray(used, np.int64)
        self.keys = np.asarray(keys, dtype=np.int64)
        """A key per state (its declaration): a training goal leaves out the states of its own proof."""
        self.n, self.config = int(n_premises), config
        self._by_token = self.rows.T.tocsr()

    @classmethod
    def build(cls, texts: list[str], used: list[np.ndarray], keys: np.ndarray, n_premises: int,
              config: NearestStatesConfig | None = None) -> NearestStates:
        """From the states' goals, the index ids each used (ids outside 0..n_premises-1 are dropped) and a
        key per state."""
        vocab: dict[str, int] = {}
        indptr, cols = [0], []
        for t in texts:
            toks = {vocab.setdefault(w, len(vocab)) for w in bm25_tokens(t)}
            cols.extend(sorted(toks))
            indptr.append(len(cols))
        cols_a = np.asarray(cols, dtype=np.int64)
        df = np.bincount(cols_a, minlength=len(vocab)).astype(np.float64)
        idf = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
        rows = sp.csr_matrix((idf[cols_a], cols_a, np.asarray(indptr, dtype=np.int64)),
                             shape=(len(texts), len(vocab)), dtype=np.float32)
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        rows = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ rows
        clean = [np.unique(u[(u >= 0) & (u < n_premises)]) for u in used]
        used_indptr = np.zeros(len(clean) + 1, dtype=np.int64)
        np.cumsum([len(u) for u in clean], out=used_indptr[1:])
        flat = np.concatenate(clean) if clean else np.zeros(0, dtype=np.int64)
        return cls(vocab, idf, rows.tocsr(), used_indptr, flat, keys, n_premises, config or NearestStatesConfig())

    @classmethod
    def from_states(cls, states, state_ids: np.ndarray, to_index: np.ndarray | None, n_premises: int,
                    config: NearestStatesConfig | None = None) -> NearestStates:
        """From a dataset's `states` (data/states.py) `state_ids`: their goals, their positives mapped by
        `to_index` (corpus id -> index id, -1 when not indexed; None: the same ids), keyed by declaration."""
        state_ids = np.asarray(state_ids, dtype=np.int64)
        used = [states.positives(s) for s in state_ids.tolist()]
        if to_index is not None:
            used = [to_index[u] for u in used]
        return cls.build([states.state[s] for s in state_ids.tolist()], used, states.decl_id[state_ids],
                         n_premises, config)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def query(self, state: str) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, l2-normalised weights) of a goal; tokens no training state holds are dropped."""
        toks = np.unique(np.fromiter((self.vocab.get(w, -1) for w in bm25_tokens(state)), dtype=np.int64))
        toks = toks[toks >= 0]
        w = self.idf[toks]
        norm = float(np.sqrt((w * w).sum()))
        return toks, (w / norm if norm > 0 else w)

    def neighbours(self, state: str, exclude_key: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(state ids, cosine similarities) of the nearest training states, most similar first; a key >= 0
        leaves out the states that share it."""
        toks, w = self.query(state)
        if not len(toks):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        part = self._by_token[toks]
        sims = np.asarray(part.T @ w).ravel().astype(np.float32)
        if exclude_key >= 0:
            sims[self.keys == exclude_key] = 0.0
        k = min(self.config.neighbours, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((top, -sims[top]))]
        top = top[sims[top] > 0]
        return top, sims[top]

    def scores(self, state: str, exclude_key: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(premise ids, scores), sparse: the summed similarity^power of the neighbours that used each."""
        top, sims = self.neighbours(state, exclude_key)
        if not len(top):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        lo, hi = self.used_indptr[top], self.used_indptr[top + 1]
        lens = hi - lo
        flat = np.concatenate([self.used[a:b] for a, b in zip(lo.tolist(), hi.tolist())]) if lens.sum() else (
            np.zeros(0, dtype=np.int64))
        weights = np.repeat(sims.astype(np.float64) ** self.config.power, lens)
        ids, inv = np.unique(flat, return_inverse=True)
        return ids, np.bincount(inv, weights=weights, minlength=len(ids)).astype(np.float32)

    def run(self, state: str, mask: np.ndarray | None, depth: int, exclude_key: int = -1):
        """((ids, scores) `depth` long, -1 padded, best first and equal scores by lower id; a lookup of any id
        of the request's space: 0 for a premise no neighbour used and for new premises)."""
        ids, scores = self.scores(state, exclude_key)
        if mask is not None and len(ids):
            keep = mask[ids]
            ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:depth]
        run = padded_topk(depth, ids[order], scores[order])
        return run, score_lookup(ids, scores, 0.0)

    def save(self, folder: Path) -> None:
        """The arrays (npz) and the vocabulary with the parameters (JSON) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / ARRAYS_FILE, idf=self.idf, indptr=self.rows.indptr.astype(np.int64),
                 indices=self.rows.indices.astype(np.int64), data=self.rows.data.astype(np.float32),
                 used_indptr=self.used_indptr, used=self.used, keys=self.keys)
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        (folder / PARAMS_FILE).write_text(json.dumps({
            "format": FORMAT, "n_premises": self.n, "neighbours": self.config.neighbours,
            "power": self.config.power, "tokens": tokens}))

    @classmethod
    def load(cls, folder: Path, n_premises: int | None = None) -> NearestStates:
        """What `save` wrote (over `n_premises` indexed premises, when given); a one-line ValueError naming
        the file when it is not."""
        folder = Path(folder)
        params_path, arrays_path = folder / PARAMS_FILE, folder / ARRAYS_FILE
        try:
            params = json.loads(params_path.read_text())
            tokens, n = params["tokens"], int(params["n_premises"])
            config = NearestStatesConfig(int(params["neighbours"]), float(params["power"]))
            if params.get("format") != FORMAT or config.neighbours < 1:
                raise ValueError(f"format {params.get('format')}, neighbours {config.neighbours}")
            if n_premises is not None and n != n_premises:
                raise ValueError(f"made over {n} premises, the index has {n_premises}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{params_path}: not a nearest-states file ({e})") from None
        with np.load(arrays_path, allow_pickle=False) as z:
            a = {k: z[k] for k in ("idf", "indptr", "indices", "data", "used_indptr", "used", "keys")}
        states, vocab = len(a["indptr"]) - 1, len(tokens)
        if (len(a["idf"]) != vocab or len(a["keys"]) != states or len(a["used_indptr"]) != states + 1
                or a["indptr"][-1] != len(a["indices"]) or len(a["data"]) != len(a["indices"])
                or (len(a["indices"]) and not 0 <= a["indices"].min() <= a["indices"].max() < vocab)
                or a["used_indptr"][-1] != len(a["used"]) or np.any(np.diff(a["indptr"]) < 0)
                or np.any(np.diff(a["used_indptr"]) < 0)
                or (len(a["used"]) and not 0 <= a["used"].min() <= a["used"].max() < n)):
            raise ValueError(f"{arrays_path}: arrays do not agree with each other or with {PARAMS_FILE}")
        rows = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=(states, vocab))
        return cls({t: i for i, t in enumerate(tokens)}, a["idf"], rows, a["used_indptr"], a["used"], a["keys"],
                   n, config)

