"""The mention features (rank/rerank/mentions.py): which of a request's new premises name a candidate, how near
the end of the client's list they are, and that they join a reranker's columns only when its spec asks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanpremise.rank.rerank.features import RerankInput, Signals, feature_list, features
from leanpremise.rank.rerank.mentions import FAMILY, text_keys
from leanpremise.rank.rerank.model import spec_problem
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.rerank.spec import FeatureEntry, RankerEntry, RerankerSpec


def table() -> PremiseTable:
    names = ["CommRingCat", "TopologicalSpace.OpenNhds", "Nat.succ_le", "CategoryTheory.Functor.obj"]
    return PremiseTable(names=names, kind=np.zeros(4, np.int8), is_prop=np.zeros(4, bool),
                        text_len=np.full(4, 10, np.int32), module_id=np.zeros(4, np.int32),
                        module_root=np.zeros(1, np.int32), import_indptr=np.array([0, 0]),
                        import_indices=np.zeros(0, np.int64))


def request() -> RerankInput:
    """Three new premises in the client's order: an import's, then the file's two (the last is nearest)."""
    names = ["Imp.a", "My.b", "My.c"]
    texts = ["theorem Imp.a (R : CommRingCat) : R = R",
             "def My.b (x : TopologicalSpace.OpenNhds p) : CommRingCat := F.obj x",
             "theorem My.c (U : OpenNhds p) : Nat.succ_le_iff = My.b U"]
    return RerankInput(state="⊢ True", n_indexed=4, local_ids=np.zeros(0, np.int64), frontier=np.zeros(0, np.int64),
                       new_names=names, new_texts=texts)


def columns(cand: list[int]) -> dict[str, np.ndarray]:
    sig = Signals(runs={})
    x = features(table(), request(), sig, np.array(cand), [], structure=True, depth=10, families=[FAMILY])
    names = [f.name for f in feature_list([], True, [FAMILY])]
    return {n: x[:, i].astype(np.float64) for i, n in enumerate(names)}


def w(from_end: int) -> float:
    return 1 / math.log2(2 + from_end)


def test_a_candidate_named_by_the_files_declarations_counts_them_nearest_first():
    col = columns([0, 1, 2, 3, 4, 5, 6])
    # CommRingCat: named by Imp.a (2 from the end) and My.b (1 from the end)
    assert col["mention_tail"][0] == pytest.approx(w(2) + w(1), rel=1e-6)
    assert col["mention_nearest"][0] == 1
    # OpenNhds: in full by My.b; after `open` by My.c: the tail key needs the namespace, the last part not
    assert col["mention_tail"][1] == pytest.approx(w(1), rel=1e-6)
    assert col["mention_last"][1] == pytest.approx(w(1) + w(0), rel=1e-6)
    assert col["mention_nearest"][1] == 0
    # Nat.succ_le: `Nat.succ_le_iff` is another constant, not a mention
    assert col["mention_tail"][2] == 0 and col["mention_last"][2] == 0 and np.isnan(col["mention_nearest"][2])
    # Functor.obj: in field notation (F.obj) only: its last part
    assert col["mention_tail"][3] == 0 and col["mention_last"][3] == pytest.approx(w(1), rel=1e-6)
    assert col["mention_last_share"][3] == pytest.approx(1 / 3, rel=1e-6)
    # the new premises: My.b is named by My.c; none names itself
    assert col["mention_tail"][5] == pytest.approx(w(0), rel=1e-6)
    assert col["mention_tail"][4] == 0 and col["mention_tail"][6] == 0


def test_the_clients_places_from_the_end_weigh_the_mentions():
    req = request()
    req.new_from_end = np.array([0, 5, 9])  # as read_new_premises gives them when named ones were dropped
    sig = Signals(runs={})
    x = features(table(), req, sig, np.array([0]), [], structure=False, depth=10, families=[FAMILY])
    assert x[0, 0] == pytest.approx(w(0) + w(5), rel=1e-6) and x[0, 2] == 0


def test_a_declarations_own_name_is_not_a_mention_of_itself():
    tails, lasts = text_keys("A.B.foo", "theorem A.B.foo : B.bar = A.B.foo")
    assert "B.foo" in tails and "bar" in lasts  # a second occurrence (a recursive use) counts
    tails, lasts = text_keys("A.B.foo", "theorem A.B.foo : B.bar = 1")
    assert "B.foo" not in tails and "foo" not in lasts and "B.bar" in tails


def test_a_request_without_new_premises_mentions_nothing():
    req = request()
    req.new_names, req.new_texts = [], []
    x = features(table(), req, Signals(runs={}), np.array([0, 1]), [], structure=False, depth=10, families=[FAMILY])
    assert x[:, [0, 1, 3]].tolist() == [[0, 0, 0], [0, 0, 0]] and np.isnan(x[:, 2]).all()


def spec(families: list[str], names: list[str]) -> RerankerSpec:
    return RerankerSpec(library="lightgbm", model_file="model.txt", feature_set=2, rankers=[
        RankerEntry(kind="bm25", name="bm25")], families=families, depth=10, local_bound=4,
        features=[FeatureEntry(name=n, version=1) for n in names])


def test_a_spec_without_families_reads_the_columns_it_always_read():
    before = [f.name for f in feature_list(["bm25"])]
    assert spec_problem(spec([], before)) is None
    assert RerankerSpec.model_validate_json(spec([], before).model_dump_json(exclude={"families"})).families == []
    assert spec_problem(spec([FAMILY], before)) is not None  # asks for the family's columns, lists none
    with_family = [f.name for f in feature_list(["bm25"], True, [FAMILY])]
    assert with_family[: len(before)] == before and spec_problem(spec([FAMILY], with_family)) is None
    assert "unknown feature family" in spec_problem(spec(["nope"], before))
