"""`eval-files` and the retrieved-premises / decls schemas on small files written by hand, with the expected
metrics worked out by hand (not by calling the functions `retrieve` uses)."""

from __future__ import annotations

import json
import logging

import pytest

from leanpremise.cli import main

DECLS = [
    {"decl_name": "t1", "module": "M", "idx_in_module": 0, "gt_premises": ["p", "q"], "gt_hints": {}},
    {"decl_name": "t2", "module": "M", "idx_in_module": 1, "gt_premises": ["a", "b", "c", "d"], "gt_hints": {}},
    {"decl_name": "t3", "module": "M", "idx_in_module": 2, "gt_premises": [], "gt_hints": {}},
]


def _entry(decl: str, idx: int, names: list[str], scores: list[float]) -> dict:
    return {"state_name": f"M#{idx}", "decl_name": decl, "module": "M", "idx_in_module": idx,
            "premises": [{"corpus_id": n, "score": s} for n, s in zip(names, scores, strict=True)]}


# File order is the ranking. t1: x, p, (p again: counted once), q -> ranking x, p, q.
# t2: a, y, z, b.  t3 has no positives.  "other" is not in the decls file (skipped, counted as missing).
RETRIEVED = [
    _entry("t1", 0, ["x", "p", "p", "q"], [0.9, 0.8, 0.7, 0.2]),
    _entry("t2", 1, ["a", "y", "z", "b"], [0.6, 0.5, 0.5, 0.1]),
    _entry("t3", 2, ["x"], [1.0]),
    _entry("other", 3, [], []),
]


def _run(tmp_path, retrieved, *extra, name="dot_test-m.json"):
    (tmp_path / "decls.json").write_text(json.dumps(DECLS))
    (tmp_path / name).write_text(json.dumps(retrieved))
    out = tmp_path / "metrics.json"
    rc = main(["eval-files", str(tmp_path / "decls.json"), str(tmp_path / name), "--k", "1", "2", "3",
               "--json", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())[str(tmp_path / name)]


def test_hand_computed_recall_mrr_precision_f1_fullrecall(tmp_path, capsys):
    m = _run(tmp_path, RETRIEVED)
    assert (m["states"], m["states_with_positives"], m["missing"]) == (3, 2, 1)
    # Recall over t1, t2 (t3 has no positives):
    #   t1 (p, q at ranks 2, 3): @1 0/2, @2 1/2, @3 2/2.   t2 (a at 1, b at 4): @1..@3 1/4.
    assert m["recall@1"] == pytest.approx((0 + 1 / 4) / 2)          # 0.125
    assert m["recall@2"] == pytest.approx((1 / 2 + 1 / 4) / 2)      # 0.375
    assert m["recall@3"] == pytest.approx((1 + 1 / 4) / 2)          # 0.625
    # MRR over all three states: first hit t1 rank 2, t2 rank 1, t3 none (0).
    assert m["mrr@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert m["mrr@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # Precision@2: t1 1 of 2, t2 1 of 2, t3 0.  FullRecall@3: t1 yes, t2 no, t3 (no positives) yes.
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert m["fullrecall@3"] == pytest.approx((1 + 0 + 1) / 3)
    # F1@2: t1 P=R=1/2 -> 1/2; t2 P=1/2, R=1/4 -> 2(1/8)/(3/4) = 1/3; t3 nothing found -> 0.
    assert m["f1@2"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    out = capsys.readouterr().out
    assert "Recall averages over the states with positives (w/ pos)" in out and "MRR over all states" in out
    one = _run(tmp_path, RETRIEVED, "--recall_without_positives", "one")
    assert one["recall@1"] == pytest.approx((0 + 1 / 4 + 1) / 3)  # t3 counts as recall 1
    assert "those without positives counting as 1" in capsys.readouterr().out


def test_a_file_whose_scores_rise_is_ranked_in_file_order_with_one_warning(tmp_path, caplog):
    # t1 written x, p, q but scored 0.1, 0.9, 0.2: sorting by score would put p first (Recall@1 1/2).
    rising = [_entry("t1", 0, ["x", "p", "q"], [0.1, 0.9, 0.2]), *RETRIEVED[1:3]]
    with caplog.at_level(logging.WARNING):
        m = _run(tmp_path, rising)
    assert m["recall@1"] == pytest.approx((0 + 1 / 4) / 2)  # file order: x first, as Lean reads it
    warnings = [r.getMessage() for r in caplog.records if "rise in file order" in r.getMessage()]
    assert len(warnings) == 1 and "dot_test-m.json: 1 of 3 entries" in warnings[0]


def test_swapped_arguments_say_which_comes_first(tmp_path, capsys):
    (tmp_path / "decls.json").write_text(json.dumps(DECLS))
    (tmp_path / "dot_test-m.json").write_text(json.dumps(RETRIEVED))
    assert main(["eval-files", str(tmp_path / "dot_test-m.json"), str(tmp_path / "decls.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "dot_test-m.json: this is a retrieved-premises file, not a decls file" in err
    assert "eval-files takes the decls file first" in err


def test_bad_entries_name_file_entry_and_field(tmp_path, capsys):
    bad = [*RETRIEVED[:1], {**RETRIEVED[1], "premises": [{"corpus_id": "a", "score": "high"}]}]
    (tmp_path / "decls.json").write_text(json.dumps(DECLS))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["eval-files", str(tmp_path / "decls.json"), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert 'bad.json: entry 1 ("t2"): field "premises[0].score": Input should be a valid number' in err
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    assert main(["eval-files", str(tmp_path / "decls.json"), str(tmp_path / "bad.json")]) == 2
    assert "bad.json: expected a JSON list (a retrieved-premises file), got object" in capsys.readouterr().err
    no_gt = [{k: v for k, v in d.items() if k != "gt_premises"} for d in DECLS]
    (tmp_path / "decls.json").write_text(json.dumps(no_gt))
    (tmp_path / "dot_test-m.json").write_text(json.dumps(RETRIEVED))
    assert main(["eval-files", str(tmp_path / "decls.json"), str(tmp_path / "dot_test-m.json")]) == 2
    assert 'decls.json: entry 0 ("t1"): field "gt_premises": missing' in capsys.readouterr().err


def test_plot_styles_stay_distinct_past_ten_curves_and_the_legend_is_outside(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanpremise.eval import eval_files

    (tmp_path / "decls.json").write_text(json.dumps(DECLS))
    paths = []
    for i in range(12):
        p = tmp_path / f"dot_test-m{i}.json"
        p.write_text(json.dumps(RETRIEVED[:3]))
        paths.append(p)
    gt = eval_files.load_decls(tmp_path / "decls.json")
    rankings = [eval_files.load_ranking(p, gt) for p in paths]
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))  # keep the figure to inspect
    out = eval_files.plot_recall(rankings, tmp_path / "recall.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = seen["fig"].axes[0]
    styles = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()]
    assert len(styles) == 12 and len(set(styles)) == 12
    renderer = seen["fig"].canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # entirely to the right of the data area


def test_writer_refuses_a_ranking_whose_scores_rise(tmp_path):
    from leanpremise.eval.retrieved_files import RetrievedEntry, write_retrieved

    entry = RetrievedEntry(**_entry("t1", 0, ["x", "p"], [0.1, 0.9]))
    with pytest.raises(ValueError, match=r"entry 0 \('t1'\): scores rise"):
        write_retrieved(tmp_path / "dot_test-bad.json", [entry])
    assert not (tmp_path / "dot_test-bad.json").exists()


def test_writers_emit_the_documented_bytes(tmp_path):
    """The pydantic writers produce the bytes the previous dict + orjson writers did (compact, UTF-8)."""
    import orjson

    from leanpremise.eval.decls import DeclEntry, write_decls
    from leanpremise.eval.retrieved_files import RetrievedEntry, write_retrieved

    retrieved = [_entry("Nat.é", 0, ["a", "b"], [0.71, 1e-05]), _entry("t2", 1, [], [])]
    write_retrieved(tmp_path / "r.json", [RetrievedEntry.model_construct(**e) for e in retrieved])
    assert (tmp_path / "r.json").read_bytes() == orjson.dumps(retrieved)
    decls = [{**DECLS[0], "gt_hints": {"p": "notInSimpAll"}}, DECLS[2]]
    write_decls(tmp_path / "d.json", [DeclEntry.model_construct(**d) for d in decls])
    assert (tmp_path / "d.json").read_bytes() == orjson.dumps(decls)
