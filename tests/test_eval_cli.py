"""`leanpremise retrieve | export-decls | eval-files | baseline` end to end on the shipped sample (small k)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from leanpremise.cli import main

K = 8


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-cli")


@pytest.fixture(scope="module")
def retrieved(out, tiny_model_dir):
    """retrieve with a tiny model, plus export-decls and the BM25 baseline, into one out dir."""
    rp = out / "rp"
    assert main(["retrieve", "--model", str(tiny_model_dir), "--model_name", "tiny", "--k", str(K),
                 "--out_dir", str(rp), "--metrics_out", str(out / "tiny.json"), "--batch_size", "128"]) == 0
    assert main(["export-decls", "--out_dir", str(rp)]) == 0
    assert main(["baseline", "bm25", "--k", str(K), "--out_dir", str(rp), "--metrics_out", str(out / "bm25.json")]) == 0
    return rp


def test_retrieve_writes_accessible_premises_and_metrics(retrieved, out, sample_dataset):
    ds = sample_dataset
    entries = json.loads((retrieved / "dot_test-tiny.json").read_text())
    assert [e["decl_name"] for e in entries] == [ds.states.decl_name[s] for s in ds.split.test]
    for e, s in zip(entries, ds.split.test.tolist()):
        assert e["state_name"] == ds.states.name(s, ds.corpus.modules)
        ids = np.array([ds.corpus.name_to_id[p["corpus_id"]] for p in e["premises"]])
        assert len(ids) == min(K, ds.access.count(s))
        assert ds.access.is_accessible(np.array([s]), ids).all()  # never inaccessible, never the declaration
        assert ds.states.decl_id[s] not in ids
    m = json.loads((out / "tiny.json").read_text())
    for metric in ("precision", "recall", "fullrecall", "ndcg", "map", "accuracy"):
        assert f"{metric}@{K}" in m and f"{metric}@{K}_pos" in m
    assert f"mrr@{K}" in m and m["states"] == len(ds.split.test) and m["seconds"] > 0
    assert m["states_without_positives"] == int((ds.states.n_positives[ds.split.test] == 0).sum())


def test_export_decls_matches_the_split(retrieved, sample_dataset):
    ds = sample_dataset
    for split in ("valid", "test"):
        decls = json.loads((retrieved / f"{split}_decls.json").read_text())
        assert [d["decl_name"] for d in decls] == getattr(ds.split, f"{split}_decls")
        for d, s in zip(decls, ds.split_ids(split).tolist()):
            assert set(d) == {"decl_name", "module", "idx_in_module", "gt_premises", "gt_hints"}
            assert d["gt_premises"] == [ds.corpus.names[p] for p in ds.states.positives(s)]
            assert set(d["gt_premises"]) <= set(d["gt_hints"])


def test_eval_files_agrees_with_retrieve_and_plots(retrieved, out, capsys):
    capsys.readouterr()
    plot = out / "recall.png"
    files = [str(retrieved / "dot_test-tiny.json"), str(retrieved / "dot_test-bm25.json")]
    assert main(["eval-files", str(retrieved / "test_decls.json"), *files, "--k", "4", str(K),
                 "--plot", str(plot), "--json", str(out / "files.json")]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "bm25" in table and f"recall@{K}" in table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_file = json.loads((out / "files.json").read_text())
    for name in ("tiny", "bm25"):
        want = json.loads((out / f"{name}.json").read_text())
        got = by_file[str(retrieved / f"dot_test-{name}.json")]
        for key in (f"recall@{K}", f"precision@{K}", f"fullrecall@{K}", "recall@4"):
            assert got[key] == pytest.approx(want[key]), (name, key)


def test_eval_files_rejects_bad_input(tmp_path, retrieved, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    assert main(["eval-files", str(retrieved / "test_decls.json"), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_bm25_beats_chance(retrieved, out):
    m = json.loads((out / "bm25.json").read_text())
    assert m[f"recall@{K}"] > 0.2 and m["index_seconds"] >= 0


def test_mepo_grid_in_one_command(tmp_path):
    rp = tmp_path / "rp"
    assert main(["baseline", "mepo", "--grid", "--k", "4", "--out_dir", str(rp), "--split", "valid",
                 "--metrics_out", str(tmp_path / "mepo.json")]) == 0
    names = sorted(p.name for p in rp.iterdir())
    assert len(names) == 20
    assert "dot_valid-mepo-p0.6-c2.4.json" in names and "dot_valid-mepo-p0.9-c3.6.json" in names
    assert (tmp_path / "mepo-mepo-p0.5-c0.9.json").is_file()


def _tiny_t5(path):
    """A randomly initialised 1-layer T5 (full encoder-decoder, as ReProver ships) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from leanpremise.model.encoder import default_model_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    cfg = T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=2, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reprover_style_t5_encoder(tmp_path):
    from leanpremise.model.encoder import encode_texts
    from leanpremise.model.t5 import load_t5_encoder

    ckpt = _tiny_t5(tmp_path / "tiny-t5")
    model = load_t5_encoder(ckpt, device="cpu")
    emb = encode_texts(model, ["⊢ a + b = b + a", "theorem Nat.add_comm (n m : ℕ) : n + m = m + n"])
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert type(model[0].auto_model).__name__ == "T5EncoderModel"
    # mean pooling over tokens: the pooled vector is the masked mean of the encoder's token states
    import torch

    feats = model.tokenize(["⊢ x"])
    with torch.no_grad():
        hidden = model[0].auto_model(**{k: v for k, v in feats.items() if k in ("input_ids", "attention_mask")})
    mean = hidden.last_hidden_state[0].mean(0).numpy()
    assert np.allclose(encode_texts(model, ["⊢ x"])[0], mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(ValueError, match="T5 checkpoint"):
        load_t5_encoder(_bert_dir(tmp_path), device="cpu")


def _bert_dir(tmp_path):
    from conftest import build_tiny_model

    build_tiny_model(tmp_path / "bert")
    return tmp_path / "bert" / "hf"


def test_baseline_reprover_end_to_end(tmp_path):
    from conftest import decl, make_data_dir, state

    root = make_data_dir(
        tmp_path / "d", {"Mathlib.A": None, "Mathlib.B": None}, {"Mathlib.B": ["Mathlib.A"]},
        {"Mathlib.A": [decl("a1", 1), decl("a2", 10)], "Mathlib.B": [decl("b1", 1), decl("b2", 10)]},
        {"Mathlib.B": [state("b1", 3, recs=["a2"]), state("b2", 12, recs=["b1"])]},
    )
    ckpt = _tiny_t5(tmp_path / "reprover-tiny")
    assert main(["baseline", "reprover", "--model", str(ckpt), "--data_dir", str(root), "--split_mode", "all",
                 "--split", "all", "--k", "4", "--out_dir", str(tmp_path / "rp"), "--device", "cpu"]) == 0
    entries = json.loads((tmp_path / "rp" / "dot_all-reprover-tiny.json").read_text())
    assert {e["decl_name"] for e in entries} == {"b1", "b2"}
    b2 = next(e for e in entries if e["decl_name"] == "b2")
    assert {p["corpus_id"] for p in b2["premises"]} == {"a1", "a2", "b1"}


def test_mepo_file_is_ranked_as_its_scores_say_and_eval_files_agrees(out, capsys):
    """MePo ranks by round first; its written scores must fall in file order, so eval-files (and anyone
    sorting by score) reports the Recall the run reported (it used to re-sort and report far less)."""
    rp, k = out / "mepo", 64
    assert main(["baseline", "mepo", "--k", str(k), "--out_dir", str(rp), "--metrics_out", str(out / "mepo.json")]) == 0
    assert main(["export-decls", "--split", "test", "--out_dir", str(rp)]) == 0
    entries = json.loads((rp / "dot_test-mepo-p0.6-c2.4.json").read_text())
    rounds = 0
    for e in entries:
        scores = [p["score"] for p in e["premises"]]
        assert all(a >= b for a, b in itertools.pairwise(scores)), e["decl_name"]
        rounds = max(rounds, -min(scores, default=0) // 1)
    assert rounds >= 1  # later rounds were accepted, so a score-only order would differ
    assert main(["eval-files", str(rp / "test_decls.json"), str(rp / "dot_test-mepo-p0.6-c2.4.json"),
                 "--k", "16", "32", "--json", str(out / "mepo-files.json")]) == 0
    got = json.loads((out / "mepo-files.json").read_text())[str(rp / "dot_test-mepo-p0.6-c2.4.json")]
    want = json.loads((out / "mepo.json").read_text())
    for key in ("recall@16", "recall@32", "precision@16", "fullrecall@32"):
        assert got[key] == pytest.approx(want[key]), key


def test_train_split_file_feeds_hard_negatives(tmp_path, sample_dataset):
    """`baseline bm25 --split train` ranks every training state, and `train --hard_negatives` reads the file
    back state by state: each training state with accessible non-positives gets hard-negative candidates."""
    from leanpremise.train.negatives import HardNegatives

    ds, rp = sample_dataset, tmp_path / "rp"
    assert main(["baseline", "bm25", "--split", "train", "--k", "16", "--out_dir", str(rp)]) == 0
    entries = json.loads((rp / "dot_train-bm25.json").read_text())
    assert [e["state_name"] for e in entries] == [ds.states.name(s, ds.corpus.modules) for s in ds.split.train]
    hard = HardNegatives.from_file(rp / "dot_train-bm25.json", ds, top_k=16)
    counts = hard.count(ds.split.train)
    has_other = np.array([ds.access.count(s) > len(ds.states.positives(s)) + 1 for s in ds.split.train.tolist()])
    assert (counts[has_other] > 0).all()
    assert not hard.count(ds.split.test).any()
