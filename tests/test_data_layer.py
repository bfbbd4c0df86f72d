"""The data layer: reading, filtering, accessibility, split, errors, cache, CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import decl, make_data_dir, state
from leanpremise.data import DataConfig, load_corpus, load_dataset
from leanpremise.data.errors import DataLayoutError
from leanpremise.data.states import parse_recommendation


def load(path, cache_dir, **kw):
    return load_dataset(DataConfig(data_dir=path, cache_dir=cache_dir, n_valid=kw.pop("n_valid", 1),
                                   n_test=kw.pop("n_test", 1), **kw))


@pytest.fixture
def small_dir(tmp_path):
    """Three modules: A <- B <- C (C imports A and B), one unrelated module D, plus filtered ones."""
    modules = ["Mathlib.A", "Mathlib.B", "Mathlib.C", "Batteries.D", "Mathlib.Tactic.T"]
    imports = {"Mathlib.B": ["Mathlib.A"], "Mathlib.C": ["Mathlib.A", "Mathlib.B"], "Batteries.D": []}
    decls = {
        "Mathlib.A": [decl("a1", 1), decl("a2", 5, doc=" doc of a2 "), decl("of_eq_true", 9)],
        "Mathlib.B": [decl("b1", 3), decl("b2", 10), decl("b3", 20), decl("Lean.b4", 25),
                      decl("b5", 30, type_="Lean.Syntax")],
        "Mathlib.C": [decl("c1", 2), decl("a1", 4), decl("c2", 8, human=False)],
        "Batteries.D": [decl("d1", 1)],
        "Mathlib.Tactic.T": [decl("t1", 1)],
    }
    states = {
        # b2 at line 10: a state inside b2's proof at line 12 sees b1, b2 (itself excluded) but not b3.
        "Mathlib.B": [state("b2", 12, recs=["a1", "b1", "missing"]), state("b2", 13, recs=["a1"]),
                      state("b3", 21, recs=["b2"])],
        "Mathlib.C": [state("c1", 3, recs=["a2"]), state("c2", 9, recs=["c1"])],
        "Batteries.D": [state("d1", 2)],
    }
    return make_data_dir(tmp_path / "data", modules, imports, decls, states, blacklist=["of_eq_true"])


def test_corpus_filters_order_and_duplicates(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c")
    names = ds.corpus.names
    # blacklist, module component, name component and type prefix filters
    assert "of_eq_true" not in names and "t1" not in names and "Lean.b4" not in names and "b5" not in names
    # duplicate "a1" in Mathlib.C: the first occurrence (Mathlib.A) wins and is counted
    assert names.count("a1") == 1 and ds.corpus.module_of(ds.corpus.name_to_id["a1"]) == "Mathlib.A"
    assert ds.corpus.stats.duplicates_dropped == 1
    assert ds.corpus.stats.premises_unfiltered == 13
    # modules contiguous and in (module, line) order
    mods = ds.corpus.module_id
    assert np.all(np.diff(mods) >= 0)
    for m in range(len(ds.corpus.modules)):
        lo, hi = ds.corpus.module_start[m], ds.corpus.module_end[m]
        assert np.all(mods[lo:hi] == m)
        assert np.all(np.diff(ds.corpus.line[lo:hi]) >= 0)
    # premise text shape, doc stripped
    assert ds.corpus.text(ds.corpus.name_to_id["a2"]) == "/-- doc of a2 -/\ntheorem a2  : True"


def test_filter_off_keeps_everything_but_duplicates(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c", filter=False)
    assert len(ds.corpus) == 12
    assert {"of_eq_true", "t1", "Lean.b4", "b5"} <= set(ds.corpus.names)


def test_mathlib_only(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c", mathlib_only=True)
    assert "d1" not in ds.corpus.names
    assert all(ds.corpus.modules[m].startswith("Mathlib.") for m in ds.states.module_id)


def test_the_filter_predicates_the_corpus_applies():
    """One module and one declaration at a time, as the synthetic revision (testing/) asks them."""
    from leanpremise.data.corpus import declaration_kept, module_kept

    assert module_kept("Mathlib.Order.Basic") and module_kept("Init.Core")
    assert not module_kept("Mathlib.Tactic.Ring") and module_kept("Mathlib.Tactic.Ring", filter=False)
    assert not module_kept("Init.Core", mathlib_only=True) and module_kept("Mathlib.A", mathlib_only=True)
    assert not module_kept("Batteries.Lean.Foo", filter=True, mathlib_only=True)
    assert declaration_kept("Nat.add_comm", "∀ a b, a + b = b + a", set())
    assert not declaration_kept("of_eq_true", "p", {"of_eq_true"})
    assert not declaration_kept("Lean.Elab.foo", "p", set()) and not declaration_kept("Foo.Qq.x", "p", set())
    assert not declaration_kept("foo", "Lean.Syntax", set())


def test_nameless_text(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c", nameless=True)
    assert ds.corpus.text(ds.corpus.name_to_id["b1"]) == "theorem  : True"


def test_positives_and_state_positions(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c")
    st, c = ds.states, ds.corpus
    s = st.decl_name.index("b2")
    assert [c.names[i] for i in st.positives(s)] == ["a1", "b1"]  # "missing" is not in the corpus
    assert st.line[s] == 12 and st.column[s] == len("theorem x := by ") + 1
    assert st.hints(s) == {"a1": "notInSimpAll", "b1": "notInSimpAll", "missing": "notInSimpAll"}
    assert st.name(s, c.modules) == "Mathlib.B#0"


def test_accessibility_same_module_prefix_and_self(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c")
    st, c, acc = ds.states, ds.corpus, ds.access
    s = st.decl_name.index("b2")
    visible = {c.names[i] for i in acc.ids(s)}
    # imported module A (a1, a2), same-module b1 before the state, b2 (itself) excluded, b3 (later) excluded
    assert visible == {"a1", "a2", "b1"}
    assert acc.count(s) == 3
    mask = acc.mask(np.array([s]))[0]
    assert {c.names[i] for i in np.flatnonzero(mask)} == visible
    # chunked masks agree with the full mask
    parts = np.concatenate([acc.mask(np.array([s]), lo, min(lo + 2, len(c)))[0] for lo in range(0, len(c), 2)])
    assert np.array_equal(parts, mask)
    pair = acc.is_accessible(np.array([s]), np.arange(len(c)))[0]
    assert np.array_equal(pair, mask)
    # a state in an unrelated module sees nothing of Mathlib
    d = st.decl_name.index("d1")
    assert {c.names[i] for i in acc.ids(d)} == set()


def test_known_negatives(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c")
    st, c, acc = ds.states, ds.corpus, ds.access
    s = st.decl_name.index("b2")
    ids = np.arange(len(c))
    known = {c.names[i] for i in np.flatnonzero(acc.is_known_negative(np.array([s]), ids)[0])}
    # a2: accessible non-positive. d1: module D does not import B. b3 (later in B) and c1/c2 (C imports B)
    # are not known negatives; positives a1, b1 and the declaration b2 never are.
    assert known == {"a2", "d1"}


def test_sample_negatives_are_accessible_nonpositive(sample_dataset):
    ds = sample_dataset
    rng = np.random.default_rng(0)
    ids = ds.split.train[:200]
    neg = ds.access.sample_negatives(ids, 5, rng)
    assert neg.shape == (200, 5)
    for r, s in enumerate(ids):
        acc = ds.access.count(int(s))
        npos = len(ds.states.positives(int(s)))
        if acc - npos > 0:
            assert ds.access.is_accessible(np.array([s]), neg[r]).all()
        assert not np.isin(neg[r], ds.states.positives(int(s))).any()
        assert not np.isin(neg[r], [ds.states.decl_id[s]]).any()
    again = ds.access.sample_negatives(ids, 5, np.random.default_rng(0))
    assert np.array_equal(neg, again)


def test_mask_matches_bruteforce_on_sample(sample_dataset):
    ds = sample_dataset
    c, st = ds.corpus, ds.states
    ids = ds.split.test[:25]
    mask = ds.access.mask(ids)
    for r, s in enumerate(ids):
        m = st.module_id[s]
        imported = set(c.imports_of(m).tolist())
        expect = np.array([
            (c.module_id[p] in imported
             or (c.module_id[p] == m and (c.line[p], c.column[p]) <= (st.line[s], st.column[s])))
            and p != st.decl_id[s]
            for p in range(len(c))
        ])
        assert np.array_equal(mask[r], expect)


def _reference_split(ds, n):
    """The original's procedure, written plainly with the global numpy RNG."""
    names = sorted({n for n in ds.states.decl_name})
    np.random.seed(ds.config.split_seed)
    np.random.shuffle(names)
    eligible = [x for x in names if x and x in ds.corpus.name_to_id and ds.corpus.is_human[ds.corpus.name_to_id[x]]]
    return eligible[:n], eligible[n : 2 * n]


def test_split_matches_original_procedure_and_is_disjoint(sample_dataset):
    ds = sample_dataset
    test, valid = _reference_split(ds, 500)
    assert ds.split.test_decls == test and ds.split.valid_decls == valid
    train_decls = {ds.states.decl_name[s] for s in ds.split.train}
    assert train_decls.isdisjoint(test) and train_decls.isdisjoint(valid) and set(test).isdisjoint(valid)
    assert len(ds.split.valid) == 500 and len(ds.split.test) == 500
    assert len(ds.split.train) + 1000 <= len(ds.states)


def test_split_deterministic_and_seed_dependent(sample_dataset, cache_dir):
    again = load_dataset(DataConfig(cache_dir=cache_dir))
    assert again.split.test_decls == sample_dataset.split.test_decls
    other = load_dataset(DataConfig(cache_dir=cache_dir, split_seed=1))
    assert other.split.test_decls != sample_dataset.split.test_decls


def test_root_state_is_lowest_line_index(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c", n_test=10, n_valid=0)
    # b2 has states at line index 0 and 1 in Mathlib.B; only index 0 is evaluated
    roots = {ds.states.decl_name[s]: ds.states.idx_in_module[s] for s in ds.split.test}
    assert roots["b2"] == 0
    assert "c2" not in roots  # not a human theorem: never evaluated


def test_split_mode_all(small_dir, tmp_path):
    ds = load(small_dir, tmp_path / "c", split_mode="all")
    assert sorted(ds.states.decl_name[s] for s in ds.split.all) == ["b2", "b3", "c1", "d1"]
    assert len(ds.split.train) == 0


def test_malformed_lines_are_skipped_with_one_warning(small_dir, tmp_path, caplog):
    f = small_dir / "TrainingDataWithPremises" / "Mathlib.B.jsonl"
    lines = f.read_text().splitlines()
    lines.insert(1, '{"declName": "b2", "state": "trunc')
    lines.insert(2, '{"declName": "b9"}')
    f.write_text("\n".join(lines) + "\n")
    (small_dir / "Declarations" / "Mathlib.A.jsonl").open("ab").write(b'{"name": "bad\xff\xfe"\n')
    with caplog.at_level(logging.WARNING):
        ds = load(small_dir, tmp_path / "c")
    assert ds.bad_lines.count == 3
    text = caplog.text
    assert "Mathlib.B.jsonl: skipped 2 malformed JSONL line(s): line 2" in text and "line 3" in text
    assert "missing field 'state'" in text
    assert "Mathlib.A.jsonl" in text
    assert "skipped 3 malformed line(s) in 2 file(s)" in text
    # the good lines around them survive, with their original line indices
    b = [ds.states.idx_in_module[s] for s, n in enumerate(ds.states.decl_name) if n in ("b2", "b3")]
    assert b == [0, 3, 4]


@pytest.mark.parametrize("part", ["Modules.jsonl", "Declarations", "TrainingDataWithPremises", "revision",
                                  "HammerBlacklist.jsonl", "Imports"])
def test_missing_part_names_path_and_producer(small_dir, tmp_path, part):
    path = small_dir / part
    if path.is_dir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    else:
        path.unlink()
    with pytest.raises(DataLayoutError) as e:
        load(small_dir, tmp_path / "c")
    assert str(path) in str(e.value) and "ntp-toolkit" in str(e.value)


def test_not_a_data_dir(tmp_path):
    with pytest.raises(DataLayoutError, match="does not exist"):
        load(tmp_path / "nope", tmp_path / "c")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataLayoutError, match="not a directory"):
        load(tmp_path / "file", tmp_path / "c")


def test_bad_blacklist_is_an_error(small_dir, tmp_path):
    (small_dir / "HammerBlacklist.jsonl").write_text("[1, 2]")
    with pytest.raises(DataLayoutError, match="HammerBlacklist.jsonl"):
        load(small_dir, tmp_path / "c")


def test_corpus_without_states(small_dir, tmp_path):
    for f in (small_dir / "TrainingDataWithPremises").iterdir():
        f.unlink()
    (small_dir / "TrainingDataWithPremises").rmdir()
    corpus = load_corpus(DataConfig(data_dir=small_dir, cache_dir=tmp_path / "c"))
    assert "b1" in corpus.names and len(corpus.unfiltered_names) == 13


def test_cache_hit_and_invalidation(small_dir, tmp_path):
    cache = tmp_path / "c"
    first = load(small_dir, cache)
    assert list((cache / "parsed").glob("*.npz"))
    second = load(small_dir, cache)
    assert second.corpus.names == first.corpus.names and second.states.state == first.states.state
    f = small_dir / "Declarations" / "Batteries.D.jsonl"
    f.write_text(f.read_text() + json.dumps(decl("d2", 5)) + "\n")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    third = load(small_dir, cache)
    assert "d2" in third.corpus.names


def test_parallel_parse_equals_serial(small_dir, tmp_path):
    serial = load_dataset(DataConfig(data_dir=small_dir, use_data_cache=False, workers=1, n_test=1, n_valid=1))
    parallel = load_dataset(DataConfig(data_dir=small_dir, use_data_cache=False, workers=2, n_test=1, n_valid=1))
    assert serial.corpus.names == parallel.corpus.names
    assert serial.states.decl_name == parallel.states.decl_name
    assert np.array_equal(serial.states.pos_indices, parallel.states.pos_indices)


def test_parse_recommendation():
    assert parse_recommendation("(Nat.add_comm, notInSimpAll)") == ("Nat.add_comm", "notInSimpAll")
    assert parse_recommendation("(«a, b», simpPreOnly)") == ("«a, b»", "simpPreOnly")
    assert parse_recommendation("bare_name") == ("bare_name", "")


def _cli(*args, env_cache):
    env = dict(os.environ, LEANPREMISE_CACHE_DIR=str(env_cache))
    return subprocess.run([sys.executable, "-m", "leanpremise", *args], capture_output=True, text=True, env=env,
                          check=False)


def test_cli_stats_json_and_split(tmp_path, cache_dir):
    out = _cli("data", "stats", "--json", env_cache=cache_dir)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    for key in ("modules", "modules_with_imported_only", "premises_unfiltered", "premises", "states", "train_states", "valid_states",
                "test_states", "train_pairs", "load_seconds", "peak_rss_bytes"):
        assert key in stats
    assert stats["test_states"] == 500 and stats["premises"] < stats["premises_unfiltered"]
    split_file = tmp_path / "split.json"
    out = _cli("data", "split", "--out", str(split_file), env_cache=cache_dir)
    assert out.returncode == 0, out.stderr
    split = json.loads(split_file.read_text())
    assert len(split["valid"]) == 500 and len(split["test"]) == 500 and not set(split["valid"]) & set(split["test"])


def test_cli_error_is_clear(tmp_path):
    out = _cli("data", "stats", str(tmp_path / "missing"), env_cache=tmp_path)
    assert out.returncode != 0
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_imports_of_modules_outside_the_project(tmp_path):
    """Lean core modules are imported but have no files: they become modules without premises."""
    root = make_data_dir(tmp_path / "d", ["Mathlib.A", "Mathlib.B"],
                         {"Mathlib.A": ["Init.Core", "Lean.Elab"], "Mathlib.B": ["Init.Core", "Mathlib.A"]},
                         {"Mathlib.A": [decl("a1", 1)], "Mathlib.B": [decl("b1", 1)]},
                         {"Mathlib.B": [state("b1", 2, recs=["a1"])]})
    for workers in (1, 2):
        ds = load_dataset(DataConfig(data_dir=root, use_data_cache=False, workers=workers, n_test=1, n_valid=0))
        assert "Init.Core" in ds.corpus.modules and "Lean.Elab" in ds.corpus.modules
        b = ds.corpus.module_index["Mathlib.B"]
        assert sorted(ds.corpus.modules[m] for m in ds.corpus.imports_of(b)) == ["Init.Core", "Mathlib.A"]
        assert [ds.corpus.names[i] for i in ds.access.ids(0)] == ["a1"]


def test_stats_counts_imported_only_modules_and_says_why(tmp_path):
    root = make_data_dir(tmp_path / "d", ["Mathlib.A", "Mathlib.B"],
                         {"Mathlib.A": ["Init.Core"], "Mathlib.B": ["Init.Core", "Mathlib.A"]},
                         {"Mathlib.A": [decl("a1", 1)], "Mathlib.B": [decl("b1", 1)]},
                         {"Mathlib.B": [state("b1", 2, recs=["a1"])]})
    out = _cli("data", "stats", str(root), "--n_test", "1", "--n_valid", "0", env_cache=tmp_path / "c")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert lines["modules"].split()[1] == "2" and "Modules.jsonl" in lines["modules"]
    assert lines["modules_with_imported_only"].split()[1] == "3" and "Init.Core" in lines["modules_with_imported_only"]


# ---- hostile data files (issue 22): non-regular files, files of junk ----------------------------------------


def _cli_within(args, env_cache, timeout=300):
    """The CLI, with a generous liveness bound: a reader that hangs on a FIFO fails the test, not the run."""
    env = dict(os.environ, LEANPREMISE_CACHE_DIR=str(env_cache))
    return subprocess.run([sys.executable, "-m", "leanpremise", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=timeout)


@pytest.mark.parametrize("kind", ["symlink-dev-zero", "fifo", "directory"])
@pytest.mark.parametrize("part", ["Declarations/Mathlib.A.jsonl", "TrainingDataWithPremises/Mathlib.B.jsonl",
                                  "Imports/Mathlib.C.jsonl", "revision", "HammerBlacklist.jsonl"])
def test_a_non_regular_input_file_is_refused_naming_it(small_dir, tmp_path, kind, part):
    path = small_dir / part
    path.unlink()
    if kind == "symlink-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    out = _cli_within(["data", "stats", str(small_dir), "--cache_dir", str(tmp_path / "c")], tmp_path)
    assert out.returncode != 0
    assert str(path) in out.stderr and "Traceback" not in out.stderr and "MemoryError" not in out.stderr, out.stderr


def test_a_symlink_to_a_regular_file_is_read(small_dir, tmp_path):
    f = small_dir / "Declarations" / "Mathlib.A.jsonl"
    moved = tmp_path / "elsewhere.jsonl"
    f.rename(moved)
    f.symlink_to(moved)
    assert "a2" in load(small_dir, tmp_path / "c").corpus.names


def test_a_file_of_junk_stops_with_one_line_naming_it_and_its_first_bad_line(small_dir, tmp_path):
    """The issue's case at a tenth of its size: 200k junk lines after the good ones."""
    from leanpremise.data.jsonl import JUNK_MIN_BAD

    f = small_dir / "Declarations" / "Mathlib.B.jsonl"
    good = f.read_text().count("\n")
    with f.open("a") as fh:
        fh.write("x\n" * 200_000)
    with pytest.raises(DataLayoutError) as e:
        load(small_dir, tmp_path / "c", use_data_cache=False)
    message = str(e.value)
    assert str(f) in message and f"line {good + 1}: invalid JSON" in message and "\n" not in message
    assert f"{JUNK_MIN_BAD} of its first" in message  # it stopped at the bound, not at the end of the file
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npz"))  # nothing cached


def test_some_bad_lines_in_a_large_file_are_counted_and_only_a_few_kept(small_dir, tmp_path, caplog):
    """Bad lines that are not most of a file are skipped as before, however many, but only the first few are
    kept (in memory and in the parse cache); their count survives the cache."""
    from leanpremise.data.jsonl import JUNK_MIN_BAD, MAX_LINES_NAMED

    f = small_dir / "Declarations" / "Mathlib.B.jsonl"
    lines = f.read_text().splitlines()
    n_bad = JUNK_MIN_BAD + 500
    mixed = [row for i in range(n_bad) for row in ("junk", json.dumps(decl(f"filler{i}", 100 + 2 * i)),
                                                     json.dumps(decl(f"more{i}", 101 + 2 * i)))]
    f.write_text("\n".join(lines + mixed) + "\n")  # a third of its lines bad, spread through it
    with caplog.at_level(logging.WARNING):
        first = load(small_dir, tmp_path / "c")
    assert first.bad_lines.count == n_bad
    assert len(first.bad_lines.by_file[str(f)]) == MAX_LINES_NAMED
    assert f"skipped {n_bad} malformed JSONL line(s)" in caplog.text
    assert f"and {n_bad - MAX_LINES_NAMED} more" in caplog.text
    again = load(small_dir, tmp_path / "c")  # from the parse cache
    assert again.bad_lines.count == n_bad and again.corpus.names == first.corpus.names
