"""MePo on hand-made symbol sets (worked by hand from the algorithm), against an exact reference written
from the module docstring's definition (fractions, every candidate re-scored every round), and the Lean
symbol extraction."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leanpremise.rank.lean_tokens import bm25_tokens, symbols
from leanpremise.rank.mepo import (
    MePoConfig,
    RequestPremises,
    SymbolIndex,
    mepo_rank,
    mepo_state,
    scaled_weights,
    symbol_weight,
    weight_scale,
)

# freq: A 3 (w = 1 + 2/(1+1) = 2), B 1 (w 3), X 2 (w 2), Y 1 (w 3), Z 1 (w 3)
PREMISES = [{"A", "B"}, {"A", "X"}, {"X", "Y"}, {"Z"}, {"A"}]
GOAL = {"A", "B"}


@pytest.fixture(scope="module")
def index():
    return SymbolIndex(PREMISES)


def _goal_ids(index, goal):
    return np.asarray(sorted(index.vocab[s] for s in goal if s in index.vocab), dtype=np.int64)


def _run(index, k=10, p=0.6, c=2.4, accessible=None, goal=GOAL, extra=()):
    cand = None if accessible is None else np.asarray(accessible)
    ids, scores = mepo_state(index, _goal_ids(index, goal), cand, k, MePoConfig(p=p, c=c), extra=extra,
                             goal_new=[s for s in goal if s not in index.vocab])
    keep = ids >= 0
    return ids[keep].tolist(), scores[keep].tolist()


def reference(premises, goal, cand, k, p, c, max_rounds=100, extra=()):
    """MePo straight from its definition: exact weights, all open candidates re-scored every round."""
    allp = [set(s) for s in premises] + [set(s) for s in extra]
    cand = list(cand) + [True] * len(extra)
    freq: dict[str, int] = {}
    for s in premises:
        for x in s:
            freq[x] = freq.get(x, 0) + 1
    extra_freq: dict[str, int] = {}
    for s in extra:
        for x in s:
            extra_freq[x] = extra_freq.get(x, 0) + 1

    def w(x):
        f = freq[x] if x in freq else extra_freq[x]
        return 1 + Fraction(2, max(f, 1).bit_length())  # bit_length = floor(log2 f) + 1

    rel, accepted, out, p = set(goal), {}, [], float(p)
    for rnd in range(max_rounds):
        new = []
        for i, s in enumerate(allp):
            if not cand[i] or i in accepted:
                continue
            m = sum((w(x) for x in s & rel), Fraction(0))
            if m > 0 and float(m / (m + len(s - rel))) >= p:
                new.append((i, float(m / (m + len(s - rel))), m))
        for i, score, m in new:
            accepted[i] = (rnd, score, m)
            rel |= allp[i]
        if not new or len(accepted) >= k:
            break
        p = p + (1 - p) / c
    out = sorted(accepted, key=lambda i: (accepted[i][0], -accepted[i][1], -accepted[i][2], -i))[:k]
    return out, [float(np.float32(accepted[i][1] - accepted[i][0])) for i in out]


def test_weights_follow_lean_core():
    assert symbol_weight(np.array([0, 1, 2, 3, 4, 8])).tolist() == pytest.approx([3, 3, 2, 2, 1 + 2 / 3, 1.5])
    idx = SymbolIndex(PREMISES)
    w = {s: Fraction(int(idx.weights[i]), idx.scale) for s, i in idx.vocab.items()}
    assert w == {"A": 2, "B": 3, "X": 2, "Y": 3, "Z": 3}


def test_scaled_weights_are_exact_integers_for_every_frequency():
    freq = np.arange(0, 5000)
    scale = weight_scale(int(freq.max()))
    got = scaled_weights(freq, scale)
    assert got.dtype == np.int64
    assert [Fraction(int(g), scale) for g in got] == [1 + Fraction(2, max(int(f), 1).bit_length()) for f in freq]
    with pytest.raises(ValueError, match="multiple"):
        scaled_weights(np.array([1 << 20]), weight_scale(4))


def test_one_round_then_the_pass_mark_rises_past_the_rest(index):
    # round 1 (p=0.6): {A,B} 5/5 = 1, {A} 2/2 = 1, {A,X} 2/(2+1) = 0.667 accepted; R becomes {A,B,X}.
    # round 2 (p = 0.6 + 0.4/2.4 = 0.767): {X,Y} scores 2/(2+1) = 0.667 < 0.767: nothing new, stop.
    ids, scores = _run(index)
    assert ids == [0, 4, 1]  # ties at 1.0 broken by more matched weight (5 > 2)
    assert scores == pytest.approx([1.0, 1.0, 2 / 3])


def test_slow_decay_lets_a_second_round_in(index):
    # c huge: p stays ~0.6, so {X,Y} (0.667 once X is relevant) joins in round 2; {Z} never does.
    # Ranked by round first: premise 2 comes after 1 although both score 2/3 with M = 2; the written
    # score is score - round (rounds counted from 0), so premise 2's is 2/3 - 1.
    ids, scores = _run(index, c=1e6)
    assert ids == [0, 4, 1, 2]
    assert scores == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3 - 1])


def test_a_later_round_s_higher_score_is_written_below_the_earlier_round():
    # freq: A 1 (w 3), Y 2 (w 2); goal {A}.
    # round 0 (p=0.6): {A,Y} M=3, one irrelevant symbol: 3/4 accepted; {Y} M=0 not. R becomes {A,Y}.
    # round 1 (p=0.767): {Y} M=2, nothing irrelevant: 1.0 accepted. MePo's order: [0, 1] (round first),
    # raw scores [0.75, 1.0] would rise; written [0.75, 1.0 - 1].
    index = SymbolIndex([{"A", "Y"}, {"Y"}])
    ids, scores = _run(index, k=2, goal={"A"})
    assert ids == [0, 1]
    assert scores == pytest.approx([0.75, 0.0])


def test_stops_at_k_and_respects_accessibility(index):
    assert _run(index, k=2)[0] == [0, 4]
    # premise 0 inaccessible: never returned, and its symbol B never becomes relevant through it
    ids, _ = _run(index, accessible=[False, True, True, True, True])
    assert 0 not in ids and ids == [4, 1]


def test_high_pass_mark_accepts_only_perfect_matches(index):
    assert _run(index, p=0.9)[0] == [0, 4]


def test_a_score_exactly_at_the_pass_mark_passes():
    # D1, D2, D3 have freq 4 (w = 1 + 2/3 = 5/3 each; 3 * 5/3 is not exact in binary floating point).
    # Goal {D1, D2, D3}: premise 0 (two irrelevant symbols) scores 5/7, premise 1 (one) 5/6.
    # The score is the float nearest 5/7, so a pass mark of that float passes it, the next float up not.
    prem = [{"D1", "D2", "D3", "U1", "U2"}, {"D1", "D2", "D3", "U3"}] + [{"D1", "D2", "D3"}] * 2
    index = SymbolIndex(prem)
    cand, goal = [True, True, False, False], {"D1", "D2", "D3"}
    assert _run(index, p=0.75, accessible=cand, goal=goal)[0] == [1]
    assert _run(index, p=5 / 7, accessible=cand, goal=goal)[0] == [1, 0]
    assert _run(index, p=float(np.nextafter(5 / 7, 1)), accessible=cand, goal=goal)[0] == [1]


SYMS = ["A", "B", "C", "D", "E", "F", "G"]
NEW = ["N1", "N2", "N3"]


@st.composite
def instances(draw):
    premises = draw(st.lists(st.sets(st.sampled_from(SYMS), max_size=5), min_size=1, max_size=14))
    chain = draw(st.booleans())
    if chain:  # links A-B, B-C, ... and a slowly rising pass mark, so that runs last many rounds
        links = [{a, b} | draw(st.sets(st.sampled_from(SYMS), max_size=1)) for a, b in itertools.pairwise(SYMS)]
        premises = draw(st.permutations(links + premises[:6]))
    extra = draw(st.lists(st.sets(st.sampled_from(SYMS + NEW), max_size=4), max_size=4))
    goal = draw(st.sets(st.sampled_from(SYMS), min_size=1, max_size=3) | st.sets(st.sampled_from(SYMS + NEW)))
    cand = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=len(premises),
                         max_size=len(premises)))
    k = draw(st.integers(len(premises) if chain else 1, len(premises) + len(extra) + 1))
    p = draw(st.sampled_from([0.3, 0.5, 0.6, 0.75, 0.9, 1.0, 2 / 3, 3 / 5, 5 / 7]) | st.floats(0.05, 1.0))
    c = draw(st.sampled_from([0.9, 1.2, 2.4, 3.6, 50.0, 1e6]))
    if chain:
        p, c = min(p, 0.6), draw(st.sampled_from([50.0, 1e6]))
    return premises, extra, goal, cand, k, p, c


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.booleans(), st.integers(1, 8))
def test_matches_the_exact_reference(inst, use_extra, max_rounds):
    premises, extra, goal, cand, k, p, c = inst
    extra = extra if use_extra else []
    index = SymbolIndex(premises)
    known = [s for s in goal if s in index.vocab]
    ids, scores = mepo_state(index, _goal_ids(index, known), np.asarray(cand, dtype=bool), k,
                             MePoConfig(p=p, c=c, max_rounds=max_rounds), extra=extra,
                             goal_new=[s for s in goal if s not in index.vocab])
    want_ids, want_scores = reference(premises, goal, cand, k, p, c, max_rounds, extra)
    keep = ids >= 0
    assert ids[keep].tolist() == want_ids
    assert scores[keep].tolist() == want_scores
    assert not np.any(ids[~keep] >= 0) and np.all(np.isneginf(scores[~keep]))
    # all candidates (None) is the same as an all-True mask
    a = mepo_state(index, _goal_ids(index, known), None, k, MePoConfig(p=p, c=c), extra=extra)
    b = mepo_state(index, _goal_ids(index, known), np.ones(len(premises), dtype=bool), k, MePoConfig(p=p, c=c),
                   extra=extra)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), instances())
def test_request_premises_prepared_once_serve_every_state_of_the_request(inst, other):
    # the server prepares a request's new premises once for all its states: each state's run must be the
    # one it gets from the symbol sets alone, whatever states ran before it on the same prepared tables
    premises, extra, goal, cand, k, p, c = inst
    index = SymbolIndex(premises)
    prepared = RequestPremises(index, extra)
    cfg = MePoConfig(p=p, c=c)
    for g in (goal, other[2], goal):
        known, unknown = [s for s in g if s in index.vocab], [s for s in g if s not in index.vocab]
        got = mepo_state(index, _goal_ids(index, known), np.asarray(cand, dtype=bool), k, cfg, extra=prepared,
                         goal_new=unknown)
        want = mepo_state(index, _goal_ids(index, known), np.asarray(cand, dtype=bool), k, cfg, extra=extra,
                          goal_new=unknown)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    with pytest.raises(ValueError, match="another symbol index"):
        mepo_state(SymbolIndex(premises), _goal_ids(index, []), None, k, cfg, extra=prepared)


def test_extra_premises_join_the_rounds_and_their_new_symbols_match_the_goal(index):
    # extra premise 5 = {N, Y}: N unknown to the corpus (freq 1 among the extras: w 3), Y the corpus's (w 3).
    # goal {A, B, N}: round 0 accepts 0 (1, M 5), 4 (1, M 2), 5 (N matched, Y not: 3/4) and 1 (2/3);
    # R gains X and Y (through the request premise), so round 1 (p 0.767) accepts {X, Y} (5/5).
    assert _run(index, goal={"A", "B", "N"}, extra=[{"N", "Y"}])[0] == [0, 4, 5, 1, 2]
    # without N in the goal the request premise only joins once Y is relevant, which nothing makes it
    assert _run(index, goal={"A", "B"}, extra=[{"N", "Y"}])[0] == [0, 4, 1]
    # {N} alone: 3/3 = 1 in round 0, between premise 0 (M 5) and 4 (M 2) at the same score
    assert _run(index, goal={"A", "B", "N"}, extra=[{"N"}])[0] == [0, 5, 4, 1]
    # a symbol shared by three request premises is common among them: w = 1 + 2/2 = 2, so {N, Z} scores
    # 2/3 against goal {N}, below p 0.7, where one request premise alone gives it w 3 and 3/4
    assert _run(index, p=0.7, goal={"N"}, extra=[{"N", "Z"}])[0] == [5, 3]
    assert _run(index, p=0.7, goal={"N"}, extra=[{"N", "Z"}, {"N", "B", "X"}, {"N", "Y", "X"}])[0] == []


def test_bundle_arrays_round_trip_and_bad_arrays_are_named():
    index = SymbolIndex(PREMISES)
    vocab, indptr, indices = index.to_arrays()
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and isinstance(vocab, list)
    back = SymbolIndex.from_arrays(vocab, indptr, indices)
    for goal in ({"A", "B"}, {"X"}, {"Z", "Y"}):
        for a, b in zip(mepo_state(index, _goal_ids(index, goal), None, 5, MePoConfig(c=1e6)),
                        mepo_state(back, _goal_ids(back, goal), None, 5, MePoConfig(c=1e6))):
            assert a.tolist() == b.tolist()
    bad = [
        ((vocab + ["A"], indptr, indices), "repeated"),
        ((vocab, indptr[::-1].copy(), indices), "start at 0"),
        ((vocab, np.array([0, 3, 2, 5, 7, 8]), indices), "non-decreasing"),
        ((vocab, indptr, indices[:-1]), "indices has"),
        ((vocab, indptr, np.where(indices == 0, len(vocab), indices)), "out of range"),
        ((vocab, indptr, np.where(indices == 0, -1, indices)), "out of range"),
        ((vocab, indptr.astype(np.float64), indices), "integer"),
        ((vocab, indptr, indices.reshape(1, -1)), "1-d"),
        ((vocab, indptr, np.concatenate([indices[:1], indices[:1], indices[2:]])), "twice"),
        (([1] + vocab[1:], indptr, indices), "strings"),
    ]
    for args, msg in bad:
        with pytest.raises(ValueError, match=msg):
            SymbolIndex.from_arrays(*args)


def test_a_saved_table_is_the_bundle_s_three_files_and_loads_checked_against_the_corpus(tmp_path):
    import json

    index = SymbolIndex([{"A", "B"}, {"é", "X"}, set(), {"Z"}])
    index.save(tmp_path / "mepo")
    vocab, indptr, indices = index.to_arrays()
    assert sorted(p.name for p in (tmp_path / "mepo").iterdir()) == ["indices.npy", "indptr.npy", "vocab.json"]
    assert (tmp_path / "mepo/vocab.json").read_bytes() == json.dumps(vocab, ensure_ascii=False).encode()
    for name, want, dtype in (("indptr.npy", indptr, np.int64), ("indices.npy", indices, np.int32)):
        got = np.load(tmp_path / "mepo" / name, allow_pickle=False)
        assert got.dtype == dtype and np.array_equal(got, want), name
    back = SymbolIndex.load(tmp_path / "mepo", 4)
    assert back.to_arrays()[0] == vocab and np.array_equal(back.indices, indices)
    with pytest.raises(ValueError, match="indptr.npy: 4 premises, the corpus has 5"):
        SymbolIndex.load(tmp_path / "mepo", 5)
    (tmp_path / "mepo/vocab.json").write_text('{"A": 0}')
    with pytest.raises(ValueError, match="vocab.json: expected a JSON list"):
        SymbolIndex.load(tmp_path / "mepo", 4)
    (tmp_path / "mepo/indices.npy").unlink()
    with pytest.raises(ValueError, match="indices.npy: not readable"):
        SymbolIndex.load(tmp_path / "mepo", 4)


def test_rankings_do_not_depend_on_symbol_numbering():
    """Symbol ids follow set iteration order, which changes between processes (string hashing); with
    float32 sums that order decided ties. Exact sums: the same rankings under any numbering."""
    rng = np.random.default_rng(1)
    prem = [set(rng.choice(SYMS, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(60)]
    index = SymbolIndex(prem)
    vocab, indptr, indices = index.to_arrays()
    perm = rng.permutation(len(vocab))
    renamed = [vocab[i] for i in np.argsort(perm)]  # symbol vocab[j] gets id perm[j]
    rows = [perm[indices[a:b]][rng.permutation(b - a)] for a, b in itertools.pairwise(indptr)]
    other = SymbolIndex.from_arrays(renamed, indptr, np.concatenate(rows))
    for goal in ({"A"}, {"B", "C"}, {"D", "E", "F"}):
        for p, c in ((0.6, 2.4), (0.5, 1e6), (0.3, 3.6)):
            a = mepo_state(index, _goal_ids(index, goal), None, 40, MePoConfig(p=p, c=c))
            b = mepo_state(other, _goal_ids(other, goal), None, 40, MePoConfig(p=p, c=c))
            assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


def test_bad_candidate_mask_and_config_are_rejected(index):
    with pytest.raises(ValueError, match="shape"):
        mepo_state(index, _goal_ids(index, GOAL), np.ones(3, dtype=bool), 4, MePoConfig())
    with pytest.raises(ValueError, match="c=0"):
        MePoConfig(c=0)


def test_query_ids_are_the_known_symbols_of_a_goal():
    index = SymbolIndex([{"Monotone", "<"}, {"Preorder"}, {"≠", "List.map"}])
    goal = "α : Type u_1\ninst✝ : Preorder α\nf : ℕ → α\nhf : Monotone f\nh1 : f n < x\n⊢ ∀ y ∈ s, f y ≠ x"
    ids, unknown = index.query_symbols(goal)
    assert index.query_ids(goal).tolist() == ids.tolist() == sorted(index.vocab[s] for s in
                                                                    ["Preorder", "Monotone", "<", "≠"])
    assert unknown == {"ℕ", "∈"}


class _Access:
    """Accessibility stand-in: fixed masks, handed out column-major as the real one builds them."""

    def __init__(self, masks):
        self.masks = np.asfortranarray(masks)

    def mask(self, state_ids):
        return self.masks[np.asarray(state_ids)]


def test_mepo_rank_rows_equal_mepo_state(sample_dataset):
    ds = sample_dataset
    index = SymbolIndex.from_corpus(ds.corpus)
    sids = ds.split_ids("test")[:24]
    queries = [ds.states.state[s] for s in sids.tolist()]
    cfg = MePoConfig(state_batch=7)
    ids, scores = mepo_rank(index, queries, ds.access, sids, 64, cfg)
    masks = ds.access.mask(sids)
    for i, q in enumerate(queries):
        want = mepo_state(index, index.query_ids(q), masks[i], 64, cfg)
        assert ids[i].tolist() == want[0].tolist() and scores[i].tolist() == want[1].tolist()
        assert masks[i][ids[i][ids[i] >= 0]].all()
    assert (ids >= 0).sum() > 0
    # and on a random instance, with masks handed out column-major, against the exact reference
    rng = np.random.default_rng(0)
    prem = [set(rng.choice(SYMS, size=rng.integers(1, 5), replace=False).tolist()) for _ in range(40)]
    goals = [set(rng.choice(SYMS, size=2, replace=False).tolist()) for _ in range(9)]
    masks = rng.random((9, 40)) < 0.7
    texts = [" ".join(f"Sym{s}" for s in g) for g in goals]
    idx_named = SymbolIndex([{f"Sym{s}" for s in p} for p in prem])
    assert [symbols(t) for t in texts] == [{f"Sym{s}" for s in g} for g in goals]
    got, _ = mepo_rank(idx_named, texts, _Access(masks), np.arange(9), 10, MePoConfig(state_batch=4))
    for i in range(9):
        assert got[i][got[i] >= 0].tolist() == reference(prem, goals[i], masks[i], 10, 0.6, 2.4)[0]


def test_symbols_drop_variables_binders_and_own_name():
    text = "/-- doc Nat.foo -/\ntheorem List.reverse_perm' {α : Type u} {l₁ l₂ : List α} : l₁.reverse ~ l₂ ↔ l₁ ~ l₂"
    assert symbols(text, exclude="List.reverse_perm'") == {"List", "reverse", "~", "↔"}
    goal = "α : Type u_1\ninst✝ : Preorder α\nf : ℕ → α\nhf : Monotone f\nh1 : f n < x\n⊢ ∀ y ∈ s, f y ≠ x"
    assert symbols(goal) == {"Preorder", "ℕ", "Monotone", "<", "∈", "≠"}


def test_bm25_tokens_split_identifiers():
    toks = bm25_tokens("theorem Nat.add_comm (n m : ℕ) : n + m = m + n")
    assert {"Nat.add_comm", "nat", "add", "comm", "ℕ", "+", "="} <= set(toks)
    assert "theorem" not in toks and ":" not in toks
