"""scripts/remote/recipe_report.py and recipe_train.py: the recipe's metrics JSON and its deadline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from leanpremise.eval.retrieved_files import RetrievedEntry, read_retrieved, write_retrieved

REMOTE = Path(__file__).resolve().parents[1] / "scripts" / "remote"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"remote_{name}", REMOTE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = load("recipe_report")
recipe_train = load("recipe_train")


def metrics(r16: float, r32: float, r100: float) -> dict:
    return {"recall@16": r16, "recall@32": r32, "recall@100": r100, "precision@16": 0.5}


def test_stages_last_line_wins_and_odd_lines_are_skipped(tmp_path):
    f = tmp_path / "stages.tsv"
    f.write_text("unpack\t0\t12.5\ntrain\t124\t300\nnot a stage line\ntrain\t0\t290.25\n")
    assert report.read_stages(f) == {"unpack": {"rc": 0, "seconds": 12.5}, "train": {"rc": 0, "seconds": 290.25}}


def test_test_table_names_each_ranker_by_its_file():
    table = report.test_table({
        "/w/rp/dot_test-minilm-src.json": metrics(0.41234, 0.5, 0.6),
        "/w/lex/dot_test-bm25.json": metrics(0.3, 0.4, 0.5),
        "/w/lex/dot_test-mepo-p0.6-c2.4.json": metrics(0.1, 0.2, 0.3),
        "/w/fused/dot_test-minilm-src+bm25+mepo-p0.6-c2.4.json": metrics(0.45, 0.55, 0.7),
    }, dense_name="minilm-src")
    assert table["dense"] == {"ranker": "minilm-src", "recall@16": 0.4123, "recall@32": 0.5, "recall@100": 0.6}
    assert table["hybrid"]["ranker"] == "minilm-src+bm25+mepo-p0.6-c2.4"
    assert table["bm25"]["recall@100"] == 0.5 and table["mepo"]["recall@16"] == 0.1


def test_truncate_keeps_each_states_top_k(tmp_path):
    entries = [RetrievedEntry(state_name=f"s{i}", decl_name=f"d{i}",
                              premises=[{"corpus_id": f"p{j}", "score": 10.0 - j} for j in range(5)])
               for i in range(2)]
    src = write_retrieved(tmp_path / "dot_test-m.json", entries)
    report.truncate(2, src, tmp_path / "cut" / "dot_test-m.json")
    cut = read_retrieved(tmp_path / "cut" / "dot_test-m.json")
    assert [[p["corpus_id"] for p in e.premises] for e in cut] == [["p0", "p1"], ["p0", "p1"]]
    assert [e.state_name for e in cut] == ["s0", "s1"]


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_report_is_partial_until_training_and_fusion_are_both_there(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    write(out / "train_progress.json", {"stages_s": {"load_s": 2.0}, "steps": 40, "complete": False})
    write(work / "run" / "metrics_test.json", metrics(0.4, 0.5, 0.6))
    partial = report.build(out, work, "gpu_recipe_x", "minilm-x", 0.0, 600, "cmd", "")
    assert partial["complete"] is False
    assert partial["test"]["dense"]["source"] == "metrics_test.json"
    assert partial["train"]["steps"] == 40 and "hybrid" not in partial["test"]

    write(out / "train_progress.json", {"stages_s": {}, "steps": 80, "complete": True})
    write(out / "eval_files_test.json", {"dot_test-minilm-x.json": metrics(0.4, 0.5, 0.6),
                                         "dot_test-minilm-x+bm25.json": metrics(0.5, 0.6, 0.7)})
    write(work / "fused" / "fusion.json", {"method": "rrf"})
    full = report.build(out, work, "gpu_recipe_x", "minilm-x", 0.0, 600, "cmd", "")
    assert full["complete"] is True and full["fusion"] == {"method": "rrf"}
    assert full["test"]["hybrid"]["recall@32"] == 0.6 and "source" not in full["test"]["dense"]


def test_cut_json_reads_as_missing(tmp_path):
    (tmp_path / "a.json").write_text('{"steps": 4')
    assert report.read_json(tmp_path / "a.json") is None


@pytest.mark.parametrize("until, now, left", [(100.0, 40.0, 60.0), (100.0, 130.0, 0.0)])
def test_budget_is_what_is_left_before_the_deadline(until, now, left):
    assert recipe_train.budget_until(until, now) == left


def test_timed_records_a_stage_even_when_it_fails(tmp_path):
    progress = recipe_train.Progress(tmp_path / "p.json")

    def boom():
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        recipe_train.timed(progress, "pretokenise_s", boom)()
    assert "pretokenise_s" in json.loads((tmp_path / "p.json").read_text())["stages_s"]
