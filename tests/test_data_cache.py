"""The parse cache: npz + JSON, never pickle; a damaged or foreign entry is set aside and parsed again."""

from __future__ import annotations

import io
import json
import logging
import pickle

import numpy as np
import pytest

from conftest import decl, make_data_dir, state
from leanpremise.data import DataConfig, load_dataset, parse_cache


class _WritesMarker:
    """Unpickling this creates the marker file: the proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data", ["Mathlib.A", "Mathlib.B"], {"Mathlib.B": ["Mathlib.A"]},
                         {"Mathlib.A": [decl("a1", 1), decl("a2", 2)], "Mathlib.B": [decl("b1", 1)]},
                         {"Mathlib.B": [state("b1", 2, recs=["a1"])]})


def load(data_dir, cache):
    return load_dataset(DataConfig(data_dir=data_dir, cache_dir=cache, n_test=1, n_valid=0))


def entry_of(cache):
    (entry,) = (cache / "parsed").glob("*.npz")
    return entry


def same(a, b):
    return (a.corpus.names == b.corpus.names and a.corpus.modules == b.corpus.modules
            and a.states.state == b.states.state and a.states.recommendation == b.states.recommendation
            and np.array_equal(a.corpus.line, b.corpus.line) and np.array_equal(a.states.column, b.states.column))


def test_entry_is_npz_without_objects_and_a_hit_equals_the_parse(data_dir, tmp_path, caplog):
    cache = tmp_path / "c"
    first = load(data_dir, cache)
    with np.load(entry_of(cache), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    with caplog.at_level(logging.INFO, logger="leanpremise.data.parse_cache"):
        second = load(data_dir, cache)
    assert "from cache" in caplog.text
    assert same(first, second)
    assert second.corpus.texts == first.corpus.texts


def test_planted_pickles_are_never_executed(data_dir, tmp_path, caplog, monkeypatch):
    cache = tmp_path / "c"
    first = load(data_dir, cache)
    entry = entry_of(cache)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_WritesMarker(marker))
    assert not marker.exists()
    # at the entry's own name, at the same name as a pickle, and where format 3 (a pickle) kept it
    entry.write_bytes(payload)
    entry.with_suffix(".pkl").write_bytes(payload)
    monkeypatch.setattr(parse_cache, "CACHE_FORMAT", 3)
    old_key = parse_cache.fingerprint(data_dir, True)
    monkeypatch.undo()
    (cache / "parsed" / f"{old_key}.pkl").write_bytes(payload)

    with caplog.at_level(logging.WARNING):
        again = load(data_dir, cache)
    assert not marker.exists()
    assert same(first, again)
    assert "damaged or not ours" in caplog.text and str(entry) in caplog.text
    assert entry.with_name(entry.name + ".rejected").read_bytes() == payload
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert same(first, load(data_dir, cache))  # the rewritten entry loads cleanly
    assert "damaged" not in caplog.text
    assert not marker.exists()


def test_object_array_inside_an_npz_is_never_unpickled(data_dir, tmp_path):
    cache = tmp_path / "c"
    first = load(data_dir, cache)
    entry = entry_of(cache)
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([_WritesMarker(marker)], dtype=object))
    entry.write_bytes(buf.getvalue())
    assert same(first, load(data_dir, cache))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign", "directory", "wrong_dtype", "wrong_strings",
                                    "short_column"])
def test_damaged_or_foreign_entry_is_set_aside_and_parsed_again(data_dir, tmp_path, caplog, damage):
    cache = tmp_path / "c"
    first = load(data_dir, cache)
    entry = entry_of(cache)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "foreign":  # a valid entry of another data dir under this one's name
        other = make_data_dir(tmp_path / "other", ["X"], {}, {"X": [decl("x1", 1)]}, {})
        other_cache = tmp_path / "c2"
        load(other, other_cache)
        entry.write_bytes(entry_of(other_cache).read_bytes())
    elif damage == "directory":
        entry.unlink()
        entry.mkdir()
    else:  # right name and key, wrong content: as a forged entry would be
        with np.load(entry, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if damage == "wrong_dtype":
            arrays["decls.line"] = arrays["decls.line"].astype(np.float64)
        else:
            strings = json.loads(arrays["states.strings"].tobytes())
            if damage == "wrong_strings":
                strings["recommendation"][0] = [1]
            else:
                strings["state"].pop()
            arrays["states.strings"] = np.frombuffer(json.dumps(strings).encode(), dtype=np.uint8)
        with open(entry, "wb") as fh:
            np.savez(fh, **arrays)
    with caplog.at_level(logging.WARNING):
        again = load(data_dir, cache)
    assert same(first, again)
    assert "damaged or not ours" in caplog.text
    assert entry.with_name(entry.name + ".rejected").exists()
    assert entry.is_file()  # rewritten from the fresh parse
