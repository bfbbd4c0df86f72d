"""The reranker's shared pieces: the frontier of an import closure, kinds of printed declarations, the one
feature computation, candidates, the spec checks and the ordering of scored candidates."""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.rank.rerank.features import (
    FEATURE_SET,
    RANKERS,
    RerankInput,
    Signals,
    candidates,
    feature_list,
    features,
    local_order,
)
from leanpremise.rank.rerank.model import Reranker, order_by_score, spec_problem
from leanpremise.rank.rerank.premises import KINDS, PremiseTable, decl_kind, name_parts
from leanpremise.rank.rerank.spec import (
    FeatureEntry,
    RankerEntry,
    RerankerFileError,
    RerankerSpec,
    write_spec,
)
from leanpremise.rank.rerank.structure import frontier, project_root, read_new_premises, request_input
from leanpremise.rank.side import SideRankers
from leanpremise.rank.usage import UsageRanker


def closure_table(n_modules: int, seed: int) -> tuple[PremiseTable, list[set[int]]]:
    """A random import DAG (module i imports some j < i) with its transitive closures as a table."""
    rng = np.random.default_rng(seed)
    direct = [set(rng.choice(i, size=min(i, rng.integers(0, 4)), replace=False).tolist()) if i else set()
              for i in range(n_modules)]
    closures: list[set[int]] = []
    for i in range(n_modules):
        c = set()
        for j in direct[i]:
            c |= {j} | closures[j]
        closures.append(c)
    indptr = np.r_[0, np.cumsum([len(c) for c in closures])]
    indices = np.concatenate([sorted(c) for c in closures] or [[]]).astype(np.int64)
    table = PremiseTable(names=[], kind=np.zeros(0, np.int8), is_prop=np.zeros(0, bool),
                         text_len=np.zeros(0, np.int32), module_id=np.zeros(0, np.int32),
                         module_root=np.zeros(n_modules, np.int32), import_indptr=indptr, import_indices=indices)
    return table, closures


@pytest.mark.parametrize("seed", range(5))
def test_the_frontier_is_what_no_other_member_of_the_closure_imports(seed):
    table, closures = closure_table(60, seed)
    for m in range(0, 60, 7):
        closure = sorted(closures[m])
        expected = [x for x in closure if not any(x in closures[y] for y in closure if y != x)]
        assert frontier(table, np.array(closure)).tolist() == expected


def test_the_frontier_and_what_it_imports_are_the_whole_closure():
    table, closures = closure_table(30, 1)
    assert frontier(table, np.zeros(0, np.int64)).tolist() == []
    m = max(range(30), key=lambda i: len(closures[i]))
    front = frontier(table, np.array(sorted(closures[m]))).tolist()
    assert front and set().union(*({f} | closures[f] for f in front)) == closures[m]


@pytest.mark.parametrize(("decl", "kind"), [
    ("theorem foo (a : Nat) : a = a", "theorem"),
    ("/-- A doc /- nested theorem -/ still doc -/\n@[simp, norm_cast] protected lemma Nat.foo : True", "lemma"),
    ("/-- unclosed", "other"),
    ("@[reducible] noncomputable def bar := 1", "def"),
    ("private instance : Inhabited Nat := ⟨0⟩", "instance"),
    ("", "other"),
])
def test_the_kind_of_a_printed_declaration(decl, kind):
    assert decl_kind(decl) == kind


def test_name_parts_split_namespaces_and_underscores():
    assert name_parts("Nat.add_comm'") == {"nat", "add", "comm"}


def tiny_table() -> PremiseTable:
    """Five premises in modules 0, 0, 1, 2, 2; module 2 imports 0 and 1; roots: 0,1 -> A; 2 -> B."""
    return PremiseTable(names=["A.foo_bar", "A.baz", "B.qux", "C.add_comm", "C.mul_one"],
                        kind=np.array([0, 2, 0, 0, 4], np.int8), is_prop=np.array([1, 0, 1, 1, 0], bool),
                        text_len=np.array([10, 20, 30, 40, 50], np.int32), module_id=np.array([0, 0, 1, 2, 2], np.int32),
                        module_root=np.array([0, 0, 1], np.int32), import_indptr=np.array([0, 0, 0, 2]),
                        import_indices=np.array([0, 1]))


def test_features_of_a_request_with_local_and_new_premises():
    table = tiny_table()
    req = RerankInput(state="⊢ add comm foo", n_indexed=5, local_ids=local_order(np.array([3, 4])),
                      frontier=np.array([1]), project=project_root(table, np.array([3, 4])),
                      new_names=["Mine.add_thing"], new_texts=["/-- d -/\ntheorem Mine.add_thing : 1 = 1"])
    runs = {"bm25": (np.array([5, 2, 0, -1]), np.array([3.0, 2.0, 1.0, -np.inf])),
            "mepo": (np.array([2, 5, -1, -1]), np.array([0.9, 0.5, -np.inf, -np.inf]))}
    lookup = {"bm25": lambda ids: np.array([{0: 1.0, 2: 2.0, 3: 0.0, 4: 0.0, 5: 3.0}[i] for i in ids.tolist()])}
    sig = Signals(runs=runs, lookups=lookup)
    cand = candidates(sig, req, depth=3, local_bound=1)
    assert cand.tolist() == [0, 2, 4, 5]  # bm25's 3, mepo's 2 (of depth 3), the nearest local (4, not 3)
    x = features(table, req, sig, cand, ["bm25", "mepo"], structure=True, depth=3)
    names = [f.name for f in feature_list(["bm25", "mepo"])]
    col = {n: x[:, i] for i, n in enumerate(names)}
    np.testing.assert_array_equal(col["bm25_rank"], [3, 2, np.nan, 1])
    assert col["bm25_rr"].tolist() == pytest.approx([1 / 3, 1 / 2, 0, 1])
    assert col["bm25_score"].tolist() == [1, 2, 0, 3]
    assert col["bm25_rel"].tolist() == pytest.approx([1 / 3, 2 / 3, 0, 1])
    assert np.isnan(col["mepo_rank"][0]) and col["mepo_rank"][1] == 1 and col["mepo_rank"][3] == 2
    assert np.isnan(col["mepo_score"][0]) and col["mepo_score"][1] == pytest.approx(0.9)
    assert col["is_local"].tolist() == [0, 0, 1, 0] and col["local_recency"][2] == 0
    assert col["is_new"].tolist() == [0, 0, 0, 1]
    assert col["in_frontier"][1] == 1 and col["in_frontier"][0] == 0 and np.isnan(col["in_frontier"][3])
    assert req.project == 1  # the local premises' modules (2) have root B
    assert col["same_project"][2] == 1 and col["same_project"][0] == 0 and np.isnan(col["same_project"][3])
    assert col["kind"][3] == KINDS.index("theorem") and col["is_prop"][3] == 1
    assert col["text_len"][3] == len(req.new_texts[0])
    assert col["name_hits"].tolist() == [1, 0, 0, 1]  # "foo" in A.foo_bar; "add" in Mine.add_thing
    assert col["name_overlap"][0] == pytest.approx(1 / 3)


def test_the_default_clients_named_new_premises_are_read_as_local_ones():
    """The default client sends its file's declarations as new premises: the indexed ones become local
    premises (the same features as when a pre-June client sent them as local premises); the others keep
    their place from the end of the client's list."""
    table = tiny_table()
    sent = ["Mine.other", "C.add_comm", "Mine.add_thing", "C.mul_one"]  # imports' unindexed, then the file's
    named, kept, from_end = read_new_premises(np.array([table.names.index(n) if n in table.names else -1
                                                        for n in sent]))
    assert named.tolist() == [3, 4] and kept.tolist() == [0, 2] and from_end.tolist() == [3, 1]
    texts = ["theorem Mine.other : True", "theorem Mine.add_thing : 1 = 1"]
    default = request_input(table, "⊢ C.add_comm x = Mine.y", named, np.array([2]), [sent[j] for j in kept],
                            texts, from_end, len(sent))
    old = request_input(table, "⊢ C.add_comm x = Mine.y", np.array([3, 4]), np.array([2]), [sent[j] for j in kept],
                        texts, from_end, len(sent))
    sig = Signals(runs={"bm25": (np.array([5, 3, 6, -1]), np.array([3.0, 2.0, 1.0, -np.inf]))})
    cand = candidates(sig, default, depth=3, local_bound=2)
    assert cand.tolist() == [3, 4, 5, 6]  # the named ones stay candidates, as indexed premises
    x_default = features(table, default, sig, cand, ["bm25"], depth=3)
    np.testing.assert_array_equal(x_default, features(table, old, sig, cand, ["bm25"], depth=3))
    col = {f.name: x_default[:, i] for i, f in enumerate(feature_list(["bm25"]))}
    assert col["is_local"].tolist() == [1, 1, 0, 0] and col["local_recency"].tolist()[:2] == [1, 0]
    assert default.module == 2 and default.project == 1
    np.testing.assert_array_equal(col["new_from_end"], [np.nan, np.nan, 3, 1])
    assert col["new_from_end_rel"][3] == pytest.approx(1 / 4)
    # namespaces: C (of C.add_comm, C.mul_one) and Mine (Mine.y) are the goal's; "C.mul_one" shares C
    assert col["goal_namespace"].tolist() == [1, 1, 1, 1] and col["goal_namespace_rel"].tolist() == [1, 1, 1, 1]


def test_a_namespace_the_goal_does_not_mention_shares_nothing():
    table = tiny_table()
    req = request_input(table, "⊢ Nat.succ n = B.qux.z", np.zeros(0, np.int64), np.array([2]), [], [])
    cand = np.array([0, 2])  # A.foo_bar: namespace A, not in the goal; B.qux: namespace B, in it (B.qux.z)
    x = features(table, req, Signals(runs={}), cand, [], depth=3)
    col = {f.name: x[:, i] for i, f in enumerate(feature_list([]))}
    assert col["goal_namespace"].tolist() == [0, 1] and col["goal_namespace_rel"].tolist() == [0, 1]



def test_name_features_count_the_longest_shared_namespace_in_any_candidate_order_and_in_a_subset_table():
    """A new premise before an indexed one, a name part only a new premise and the goal share (no indexed
    premise has it), a three-deep namespace of which the goal names two levels; the same from a subset table."""
    names = ["X.Y.Z.w_cool", "A.foo_bar", "X.q"]
    full = PremiseTable(names=["B.pad", *names], kind=np.zeros(4, np.int8), is_prop=np.zeros(4, bool),
                        text_len=np.ones(4, np.int32), module_id=np.zeros(4, np.int32),
                        module_root=np.zeros(1, np.int32), import_indptr=np.array([0, 0]),
                        import_indices=np.zeros(0, np.int64))
    for table in (full.subset(np.array([1, 2, 3])), PremiseTable(**{**full.__dict__, "codes": None}).subset(
            np.array([1, 2, 3]))):
        assert table.names == names
        req = request_input(table, "⊢ X.Y.t zork = cool", np.zeros(0, np.int64), np.zeros(0, np.int64),
                            ["Zork.zork_lemma"], ["theorem Zork.zork_lemma : True"])
        cand = np.array([3, 0, 2, 1])  # the new premise first
        x = features(table, req, Signals(runs={}), cand, [], depth=3)
        col = {f.name: x[:, i] for i, f in enumerate(feature_list([]))}
        # Zork.zork_lemma, X.Y.Z.w_cool, X.q, A.foo_bar: zork (which only the goal and the new premise have);
        # x, y, cool; x; nothing
        assert col["name_hits"].tolist() == [1, 3, 1, 0]
        assert col["name_overlap"].tolist() == pytest.approx([1 / 2, 3 / 5, 1 / 2, 0])
        assert col["goal_namespace"].tolist() == [0, 2, 1, 0]  # X.Y of X.Y.Z; X of X.q; A is not the goal's
        assert col["goal_namespace_rel"].tolist() == pytest.approx([0, 2 / 3, 1, 0])

def spec_for(kinds, **kw) -> RerankerSpec:
    return RerankerSpec(library="lightgbm", model_file="model.txt", feature_set=FEATURE_SET,
                        features=[FeatureEntry(name=f.name, version=f.version) for f in feature_list(kinds)],
                        rankers=[RankerEntry(kind=k, name=k) for k in kinds], depth=100, local_bound=64, **kw)


def test_a_spec_of_another_feature_version_or_order_is_refused():
    assert spec_problem(spec_for(["bm25", "usage"])) is None
    bad = spec_for(["bm25"])
    bad.features[0].version = 99
    assert "version 99" in spec_problem(bad)
    swapped = spec_for(["bm25"])
    swapped.features[0], swapped.features[1] = swapped.features[1], swapped.features[0]
    assert "expected the columns" in spec_problem(swapped)
    assert "unknown feature" in spec_problem(spec_for(["bm25"]).model_copy(
        update={"features": [FeatureEntry(name="oracle", version=1)]}))


def test_a_corrupt_model_file_is_refused_in_one_line(tmp_path):
    write_spec(tmp_path, spec_for(["bm25"]))
    (tmp_path / "model.txt").write_text("tree\nnot a model\n")
    with pytest.raises(RerankerFileError) as e:
        Reranker.load(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'model.txt'}: not a readable lightgbm model")
    assert "\n" not in str(e.value)


def test_ordering_breaks_ties_by_lower_id_and_appends_the_tail_below():
    ids, scores = order_by_score(np.array([4, 1, 7]), np.array([0.5, 0.5, 0.9]), k=5, tail=np.array([7, 3, -1, 2]))
    assert ids.tolist() == [7, 1, 4, 3, 2]
    assert list(scores[:3]) == [0.9, 0.5, 0.5] and scores[3] < 0.5 and scores[4] < scores[3]


def test_usage_without_a_training_states_own_use_counts_it_once_less():
    usage = UsageRanker(np.array([3, 1, 2, 0, 1]))
    side = SideRankers(usage=usage)
    new = side.prepare([], [])
    plain = side.runs("goal", None, new, 4)["usage"][0]
    assert plain.tolist() == [0, 2, 1, 4]
    own = side.runs("goal", None, new, 4, own_uses=np.array([0, 1]))["usage"][0]
    assert own.tolist() == [0, 2, 4, -1]  # 0: 3 -> 2, ties 2 (id 0 before 2); 1: 1 -> 0, no longer used
    assert set(RANKERS) >= set(side.kinds())
