"""Ranking over accessible premises and the evaluator, on a hand-made data dir and synthetic embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import decl, make_data_dir, state
from leanpremise.data import DataConfig, load_dataset
from leanpremise.eval.evaluator import PremiseRetrievalEvaluator
from leanpremise.eval.retrieve import finish_retrieval
from leanpremise.rank.dense import rank_premises


@pytest.fixture(scope="module")
def ds(tmp_path_factory, cache_dir):
    """A imports nothing; B imports A; C imports nothing (unrelated to B).

    States of B's theorems see all of A, B's premises above them, never C, never
    later B premises, never their own declaration.
    """
    root = tmp_path_factory.mktemp("eval-data")
    modules = {"Mathlib.A": None, "Mathlib.B": None, "Mathlib.C": None}
    imports = {"Mathlib.B": ["Mathlib.A"]}
    decls = {
        "Mathlib.A": [decl("a1", 1), decl("a2", 10), decl("a3", 20)],
        "Mathlib.B": [decl("b1", 1), decl("b2", 10), decl("b3", 20), decl("b4", 30)],
        "Mathlib.C": [decl("c1", 1), decl("c2", 10)],
    }
    states = {
        "Mathlib.B": [state("b2", 12, recs=["a1", "b1"]), state("b3", 22, recs=["a2"]),
                      state("b4", 32, recs=[])],
        "Mathlib.A": [state("a3", 22, recs=["a1", "a2"])],
    }
    make_data_dir(root, modules, imports, decls, states)
    return load_dataset(DataConfig(data_dir=root, cache_dir=cache_dir, split_mode="all"))


def _emb(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(ds, state_emb, corpus_emb, state_ids, k):
    """Reference: per state, accessible ids from the data layer, sorted by score."""
    out = []
    for row, s in enumerate(state_ids):
        acc = ds.access.ids(int(s))
        scores = corpus_emb[acc] @ state_emb[row]
        out.append(acc[np.argsort(-scores, kind="stable")][:k].tolist())
    return out


def test_ranking_matches_brute_force_for_any_chunk_size(ds):
    sids = np.arange(len(ds.states))
    corpus_emb = _emb(len(ds.corpus))
    state_emb = _emb(len(sids), seed=1)
    expected = _brute_force(ds, state_emb, corpus_emb, sids, 5)
    for chunk in (1, 2, 3, 100):
        ids, scores = rank_premises(state_emb, corpus_emb, ds.access, sids, 5, chunk_size=chunk)
        got = [row[row >= 0].tolist() for row in ids]
        assert got == expected, f"chunk_size={chunk}"
        real = ids >= 0
        assert all(np.all(np.diff(row[ok]) <= 0) for row, ok in zip(scores, real))  # best first
        assert np.all(np.isneginf(scores[ids < 0]))


def test_inaccessible_and_self_premises_never_ranked(ds):
    names = ds.corpus.names
    # even when the forbidden premises have the highest scores
    corpus_emb = np.zeros((len(ds.corpus), 4), dtype=np.float32)
    corpus_emb[:, 0] = 0.1
    for bad in ("b2", "b3", "b4", "c1", "c2"):
        corpus_emb[ds.corpus.name_to_id[bad], 0] = 1.0
    b2 = next(s for s in range(len(ds.states)) if ds.states.decl_name[s] == "b2")
    state_emb = np.array([[1.0, 0, 0, 0]], dtype=np.float32)
    ids, _ = rank_premises(state_emb, corpus_emb, ds.access, np.array([b2]), k=20)
    got = {names[i] for i in ids[0] if i >= 0}
    assert got == {"a1", "a2", "a3", "b1"}
    assert (ids[0] < 0).sum() == 20 - 4  # padded, not filled with forbidden premises


def test_positive_first_gives_recall_at_1_of_one(ds):
    """Embeddings that put a positive of each state first give Recall@1 = 1 (one positive per state here)."""
    sids = ds.split_ids("all")
    corpus_emb = _emb(len(ds.corpus), dim=32)
    state_emb = np.zeros((len(sids), 32), dtype=np.float32)
    for row, s in enumerate(sids):
        pos = ds.states.positives(int(s))
        if len(pos):
            state_emb[row] = corpus_emb[pos[0]]  # cosine 1 with the first positive
    ids, scores = rank_premises(state_emb, corpus_emb, ds.access, sids, k=4)
    result = finish_retrieval(ds, "all", sids, ids, scores, out_dir=ds.data_dir.parent / "rp", model_name="oracle",
                              seconds=0.0, quiet=True)
    assert result["accuracy@1_pos"] == 1.0 and result["mrr@4_pos"] == 1.0
    single = [row for row, s in enumerate(sids) if len(ds.states.positives(int(s))) == 1]
    assert single, "the fixture needs a state with exactly one positive"
    assert all(ids[row, 0] == ds.states.positives(int(sids[row]))[0] for row in single)


class _FakeModel:
    """Encodes a text as a fixed vector chosen by a lookup, like a model with known embeddings."""

    def __init__(self, table: dict[str, np.ndarray], dim: int):
        self.table, self.dim = table, dim

    def get_embedding_dimension(self):
        return self.dim

    def encode(self, texts, **kw):
        return np.stack([self.table.get(t, np.ones(self.dim) / np.sqrt(self.dim)) for t in texts]).astype(np.float32)


def test_evaluator_recall_at_1_is_one_when_the_positive_comes_first(tmp_path, cache_dir):
    root = make_data_dir(
        tmp_path / "d", {"Mathlib.A": None, "Mathlib.B": None}, {"Mathlib.B": ["Mathlib.A"]},
        {"Mathlib.A": [decl("a1", 1), decl("a2", 10)], "Mathlib.B": [decl("b1", 1), decl("b2", 10)]},
        {"Mathlib.B": [state("b1", 3, recs=["a2"], text="goal one"), state("b2", 12, recs=["b1"], text="goal two")]},
    )
    ds = load_dataset(DataConfig(data_dir=root, cache_dir=cache_dir, split_mode="all"))
    dim = len(ds.corpus)
    eye = np.eye(dim, dtype=np.float32)
    table = {t: eye[i] for i, t in enumerate(ds.corpus.texts)}
    table["goal one"] = eye[ds.corpus.name_to_id["a2"]] * 0.9 + 0.1 / dim
    table["goal two"] = eye[ds.corpus.name_to_id["b1"]] * 0.9 + 0.1 / dim
    model = _FakeModel(table, dim)
    ev = PremiseRetrievalEvaluator(ds, split="all", k_list=[1, 2], mrr_k=2, name="unit")
    metrics = ev(model, output_path=str(tmp_path / "out"), epoch=1, steps=10)
    assert metrics["unit_recall@1"] == 1.0 and metrics["unit_mrr@2"] == 1.0
    assert ev.primary_metric == "unit_recall@2"
    ev(model, output_path=str(tmp_path / "out"), epoch=2, steps=20)
    rows = (tmp_path / "out" / ev.csv_file).read_text().splitlines()
    assert rows[0].startswith("epoch,steps,precision@1") and len(rows) == 3
    # pre-computed corpus embeddings are used instead of encoding the corpus
    wrong = np.roll(eye, 1, axis=0)
    res = ev.compute(model, corpus_embeddings=wrong)
    assert res.metrics["recall@1"] < 1.0
    with pytest.raises(ValueError, match="rows but the corpus has"):
        ev.compute(model, corpus_embeddings=eye[:-1])


def test_retrieved_file_shape(ds, tmp_path):
    sids = ds.split_ids("all")
    ids, scores = rank_premises(_emb(len(sids)), _emb(len(ds.corpus)), ds.access, sids, k=3)
    finish_retrieval(ds, "test", sids, ids, scores, tmp_path, "m", 0.0, metrics_out=tmp_path / "m.json", quiet=True)
    entries = json.loads((tmp_path / "dot_test-m.json").read_text())
    assert len(entries) == len(sids)
    for e, s in zip(entries, sids):
        assert set(e) == {"state_name", "decl_name", "module", "idx_in_module", "premises"}
        assert e["state_name"] == f"{e['module']}#{e['idx_in_module']}"
        assert e["decl_name"] == ds.states.decl_name[s]
        acc = {ds.corpus.names[i] for i in ds.access.ids(int(s))}
        assert {p["corpus_id"] for p in e["premises"]} <= acc
        assert [p["score"] for p in e["premises"]] == sorted((p["score"] for p in e["premises"]), reverse=True)
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"recall@1", "recall@1_pos", "mrr@3", "states", "states_without_positives", "seconds"} <= set(m)
