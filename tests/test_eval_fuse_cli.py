"""`leanpremise fuse` on tiny hand-made files, and `retrieve --hybrid` end to end on the shipped sample."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from leanpremise.cli import main
from leanpremise.eval.decls import DeclEntry, write_decls
from leanpremise.eval.retrieved_files import RetrievedEntry, write_retrieved

N_DOCS, DEPTH = 120, 40


def make_split(tmp, split, n_states, seed, rankers):
    """Decls with 4 positives per state, and one file per ranker: 'left' finds the first two positives,
    'right' the last two (so their fusion beats both); 'flip' swaps the roles."""
    rng = np.random.default_rng(seed)
    decls, files = [], {}
    pos = [rng.choice(N_DOCS, 4, replace=False) for _ in range(n_states)]
    for b, p in enumerate(pos):
        decls.append(DeclEntry(decl_name=f"{split}.t{b}", module="M", idx_in_module=b,
                               gt_premises=[f"p{i}" for i in p]))
    for name, half in rankers.items():
        entries = []
        for b, p in enumerate(pos):
            s = rng.standard_normal(N_DOCS)
            s[p[:2] if half == 0 else p[2:]] += 4.0
            order = np.argsort(-s)[:DEPTH]
            entries.append(RetrievedEntry(state_name=f"{split}.t{b}:0", decl_name=f"{split}.t{b}", module="M",
                                          idx_in_module=b,
                                          premises=[{"corpus_id": f"p{i}", "score": float(s[i])} for i in order]))
        files[name] = write_retrieved(tmp / f"dot_{split}-{name}.json", entries)
    write_decls(tmp / f"{split}_decls.json", decls)
    return files


def recall(path, decls_path, k):
    gt = {d["decl_name"]: set(d["gt_premises"]) for d in json.loads(decls_path.read_text())}
    out = []
    for e in json.loads(path.read_text()):
        if not gt[e["decl_name"]]:
            continue  # Recall skips states without positives, as the evaluator's does
        names = [p["corpus_id"] for p in e["premises"][:k]]
        out.append(len(gt[e["decl_name"]] & set(names)) / len(gt[e["decl_name"]]))
    return float(np.mean(out))


@pytest.fixture
def files(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    valid = make_split(inp, "valid", 60, 0, {"left": 0, "right": 1})
    test = make_split(inp, "test", 60, 1, {"left": 0, "right": 1})
    return inp, valid, test


def test_fuse_tunes_on_valid_and_writes_every_split(files, tmp_path, capsys):
    inp, valid, test = files
    out = tmp_path / "out"
    args = ["fuse", "--decls", str(inp / "valid_decls.json"), "--out", str(out)]
    assert main(args + [str(p) for p in [*valid.values(), *test.values()]]) == 0
    spec = json.loads((out / "fusion.json").read_text())
    assert spec["method"] in ("rrf", "wsum") and spec["rankers"] == ["left", "right"]
    assert min(spec["weights"].values()) > 0.2
    assert spec["tuned_on"]["split"] == "valid" and spec["tuned_on"]["states"] == 60
    assert sorted(spec["tuned_on"]["files"]) == sorted(str(p) for p in valid.values())
    assert spec["k"] == DEPTH and spec["date"] and "recall@32" in spec["metric"]
    for split in ("valid", "test"):
        fused = out / f"dot_{split}-left+right.json"
        entries = json.loads(fused.read_text())
        src = json.loads(valid["left"].read_text() if split == "valid" else test["left"].read_text())
        assert [e["state_name"] for e in entries] == [e["state_name"] for e in src]
        for e in entries:
            scores = [p["score"] for p in e["premises"]]
            assert len(scores) == DEPTH and all(a >= b for a, b in itertools.pairwise(scores))
            assert len({p["corpus_id"] for p in e["premises"]}) == DEPTH
        decls = inp / f"{split}_decls.json"
        single = max(recall(f, decls, 16) for f in (valid if split == "valid" else test).values())
        assert recall(fused, decls, 16) >= single + 0.05
    assert "tuned on 60 valid states" in capsys.readouterr().out


def test_tuning_never_reads_test_states(files, tmp_path):
    inp, valid, _ = files
    # test files where the roles are swapped and one ranker is useless: tuning on them would change the fusion
    other = tmp_path / "other"
    other.mkdir()
    test = make_split(other, "test", 60, 5, {"left": 0, "right": 0})
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["fuse", "--decls", str(inp / "valid_decls.json"), "--out", str(a), *map(str, valid.values())]) == 0
    assert main(["fuse", "--decls", str(inp / "valid_decls.json"), "--out", str(b),
                 *map(str, valid.values()), *map(str, test.values())]) == 0
    sa, sb = (json.loads((d / "fusion.json").read_text()) for d in (a, b))
    sa.pop("date"), sb.pop("date")
    assert sa == sb
    assert (a / "dot_valid-left+right.json").read_bytes() == (b / "dot_valid-left+right.json").read_bytes()


def test_a_saved_fusion_applies_without_tuning(files, tmp_path):
    inp, valid, test = files
    tuned, applied = tmp_path / "tuned", tmp_path / "applied"
    assert main(["fuse", "--decls", str(inp / "valid_decls.json"), "--out", str(tuned),
                 *map(str, valid.values()), *map(str, test.values())]) == 0
    assert main(["fuse", "--fusion", str(tuned / "fusion.json"), "--out", str(applied),
                 *map(str, test.values())]) == 0
    assert not (applied / "fusion.json").exists()
    assert (applied / "dot_test-left+right.json").read_bytes() == (tuned / "dot_test-left+right.json").read_bytes()


def test_fuse_errors_name_the_problem(files, tmp_path, capsys):
    inp, valid, test = files
    out = str(tmp_path / "out")
    decls = str(inp / "valid_decls.json")
    odd = tmp_path / "ranking.json"
    odd.write_bytes(valid["left"].read_bytes())
    cases = [
        (["--decls", decls, str(odd), str(valid["right"])], "dot_<split>-<ranker>.json"),
        (["--decls", decls, *map(str, valid.values()), str(test["left"])], "same rankers for every split"),
        ([*map(str, valid.values())], "exactly one of --decls"),
        (["--decls", decls, *map(str, test.values())], "no dot_valid-"),
        (["--decls", str(inp / "test_decls.json"), *map(str, valid.values())], "names none of the states"),
    ]
    for args, message in cases:
        assert main(["fuse", "--out", out, *args]) == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_corpus_embeddings(tiny_model_dir, sample_dataset, tmp_path_factory):
    """The tiny model's sample-corpus embeddings, encoded once for the hybrid runs below."""
    from leanpremise.model.encoder import encode_texts, load_model

    path = tmp_path_factory.mktemp("emb") / "tiny.npy"
    np.save(path, encode_texts(load_model(tiny_model_dir, "cpu"), sample_dataset.corpus.texts, batch_size=128))
    return path


def test_retrieve_hybrid_tunes_on_valid_and_writes_fused_test(tiny_model_dir, tiny_corpus_embeddings,
                                                             sample_dataset, tmp_path):
    ds = sample_dataset
    out = tmp_path / "rp"
    assert main(["retrieve", "--model", str(tiny_model_dir), "--model_name", "tiny", "--k", "128",
                 "--corpus_embeddings", str(tiny_corpus_embeddings),
                 "--hybrid", "bm25,mepo", "--out_dir", str(out), "--metrics_out", str(tmp_path / "m.json"),
                 "--batch_size", "128"]) == 0
    spec = json.loads((out / "fusion.json").read_text())
    assert spec["rankers"] == ["tiny", "bm25", "mepo"] and spec["k"] == 128
    assert spec["tuned_on"]["split"] == "valid" and spec["tuned_on"]["states"] == len(ds.split.valid)
    entries = json.loads((out / "dot_test-tiny+bm25+mepo.json").read_text())
    assert [e["decl_name"] for e in entries] == [ds.states.decl_name[s] for s in ds.split.test]
    for e, s in zip(entries, ds.split.test.tolist()):
        ids = np.array([ds.corpus.name_to_id[p["corpus_id"]] for p in e["premises"]])
        assert 0 < len(ids) <= 128 and ds.access.is_accessible(np.array([s]), ids).all()
        scores = [p["score"] for p in e["premises"]]
        assert all(a >= b for a, b in itertools.pairwise(scores))
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"recall@16", "recall@32", "recall@100"} <= set(m) and m["states"] == len(ds.split.test)
    # the metrics are the written file's
    dec = out / "test_decls.json"
    assert main(["export-decls", "--split", "test", "--out_dir", str(out)]) == 0
    assert recall(out / "dot_test-tiny+bm25+mepo.json", dec, 32) == pytest.approx(m["recall@32"], abs=1e-9)


def test_retrieve_hybrid_tune_on_a_random_part_of_split_mode_all(tiny_model_dir, tiny_corpus_embeddings,
                                                                 tmp_path, capsys):
    out = tmp_path / "rp"
    assert main(["retrieve", "--model", str(tiny_model_dir), "--model_name", "tiny", "--k", "16",
                 "--corpus_embeddings", str(tiny_corpus_embeddings),
                 "--split_mode", "all", "--split", "all", "--hybrid", "bm25", "--tune_on", "0.5",
                 "--out_dir", str(out), "--batch_size", "128"]) == 0
    spec = json.loads((out / "fusion.json").read_text())
    entries = json.loads((out / "dot_all-tiny+bm25.json").read_text())
    n_all = spec["tuned_on"]["states"] + len(entries)
    assert spec["tuned_on"]["fraction"] == 0.5 and abs(spec["tuned_on"]["states"] - n_all / 2) <= 1
    assert main(["retrieve", "--model", str(tiny_model_dir), "--split_mode", "all", "--split", "all",
                 "--corpus_embeddings", str(tiny_corpus_embeddings), "--hybrid", "bm25", "--k", "16", "--out_dir", str(tmp_path / "x")]) == 2
    assert "--tune_on" in capsys.readouterr().err
