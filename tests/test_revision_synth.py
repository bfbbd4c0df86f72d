"""The synthetic next revision: deterministic, shares respected, renames followed, loads with the data layer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import sample_closure
from leanpremise.data.dataset import load_dataset
from leanpremise.data.states import parse_recommendation
from leanpremise.testing.revision_synth import SUMMARY_NAME, Shares, synthesize

ROOTS = ["Batteries.Control.Nondet.Basic", "Batteries.Data.MLList.Basic", "Batteries.Control.AlternativeMonad",
         "Batteries.Data.Nat.Lemmas", "Batteries.Classes.Order", "Batteries.Control.ForInStep.Lemmas",
         "Batteries.Control.LawfulMonadState", "Batteries.Data.List.Basic"]
SHARES = Shares(rename=0.05, edit=0.05, delete_decl=0.02, add_decl=0.04, move=0.02, delete_module=0.1,
                add_module=0.1, decls_per_added_module=3)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "synthetic_revision.py"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The import closure of a few Batteries modules of the shipped sample (small, so the tests are fast)."""
    return sample_closure(ROOTS, tmp_path_factory.mktemp("small") / "extraction")


@pytest.fixture(scope="module")
def revised(small, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rev") / "next"
    return out, synthesize(small, out, seed=3, shares=SHARES)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _decls(root: Path) -> dict[str, dict]:
    return {d["name"]: d for f in sorted((root / "Declarations").glob("*.jsonl"))
            for d in map(json.loads, f.read_text().splitlines())}


def test_same_seed_same_output_other_seed_differs(small, revised, tmp_path):
    out, _ = revised
    again = synthesize(small, tmp_path / "again", seed=3, shares=SHARES)
    other = synthesize(small, tmp_path / "other", seed=4, shares=SHARES)
    tree = _tree(out)
    del tree[SUMMARY_NAME]  # it names its own directory
    again_tree = _tree(tmp_path / "again")
    del again_tree[SUMMARY_NAME]
    assert tree == again_tree
    assert again["renames"] == revised[1]["renames"]
    assert other["renames"] != revised[1]["renames"]


def test_shares_respected(revised):
    counts = revised[1]["counts"]
    n, m = counts["premises_before"], counts["modules_before"]
    assert counts["renamed"] == round(SHARES.rename * n) > 0
    assert counts["statements_edited"] == round(SHARES.edit * n) > 0
    assert counts["declarations_deleted"] == round(SHARES.delete_decl * n) > 0
    assert counts["declarations_added"] == round(SHARES.add_decl * n) > 0
    assert counts["declarations_moved"] == round(SHARES.move * n) > 0
    assert counts["modules_deleted"] == round(SHARES.delete_module * m) > 0
    assert counts["modules_added"] == round(SHARES.add_module * m) > 0
    assert counts["declarations_in_added_modules"] == SHARES.decls_per_added_module * counts["modules_added"]


def test_renamed_references_all_follow(small, revised):
    out, summary = revised
    renames = summary["renames"]
    before, after = _decls(small), _decls(out)
    assert set(renames).isdisjoint(after) and set(renames.values()) <= set(after)
    for old, new in renames.items():
        assert after[new]["type"] == before[old]["type"].replace(old, new) or old not in before[old]["type"]
    # No premise list, state owner or declaration text of the new revision names an old name.
    cited_before, cited_after = set(), set()
    for root, cited in ((small, cited_before), (out, cited_after)):
        for f in (root / "TrainingDataWithPremises").glob("*.jsonl"):
            for row in map(json.loads, f.read_text().splitlines()):
                cited.add(row["declName"])
                cited.update(parse_recommendation(e)[0] for k in ("declHammerRecommendation",
                                                                   "nextTacticHammerRecommendation")
                             for e in row[k])
    used = set(renames) & cited_before
    assert used, "the test needs renamed premises that proofs use"
    assert used.isdisjoint(cited_after)
    assert {renames[o] for o in used} <= cited_after
    for d in after.values():
        for old in renames:
            assert not re.search(rf"(?<![\w'!?.]){re.escape(old)}(?![\w'!?])", d["decl"]), (d["name"], old)


def test_modules_consistent_and_moves_visible(small, revised):
    out, summary = revised
    listed = {json.loads(ln)["name"] for ln in (out / "Modules.jsonl").read_text().splitlines()}
    assert set(summary["deleted_modules"]).isdisjoint(listed) and set(summary["added_modules"]) <= listed
    for m in listed:
        imports = [json.loads(ln)["name"] for ln in (out / "Imports" / f"{m}.jsonl").read_text().splitlines()]
        assert set(imports).isdisjoint(summary["deleted_modules"])
    for f in ("Imports", "Declarations", "TrainingDataWithPremises"):
        assert not any((out / f / f"{m}.jsonl").exists() for m in summary["deleted_modules"])
    after = _decls(out)
    module_of = {d["name"]: f.stem for f in (out / "Declarations").glob("*.jsonl")
                 for d in map(json.loads, f.read_text().splitlines())}
    for name, target in summary["moved"].items():
        assert module_of[name] == target and name in after


def test_loads_and_premise_count_changes_as_summary_says(small, revised):
    out, summary = revised
    c = summary["counts"]
    old, new = load_dataset(data_dir=str(small), use_data_cache=False), load_dataset(data_dir=str(out),
                                                                                   use_data_cache=False)
    assert len(old.corpus) == c["premises_before"]
    expected = (c["premises_before"] - c["declarations_deleted"] - c["declarations_in_deleted_modules"]
                + c["declarations_added"] + c["declarations_in_added_modules"])
    assert len(new.corpus) == expected == c["premises_after"]
    assert new.revision == summary["revision"] != old.revision
    old_text = dict(zip(old.corpus.names, old.corpus.texts))
    changed = {n for n, text in zip(new.corpus.names, new.corpus.texts) if old_text.get(n) != text}
    assert len(changed) == c["premise_texts_new"]
    direct = set(summary["renames"].values()) | set(summary["edited"]) | set(summary["added"])
    assert direct <= changed
    before = _decls(small)
    for name in changed - direct:  # the rest cite a renamed declaration in their statement
        d = before[name]
        assert any(old in " ".join([*d["args"], d["type"], d.get("doc") or ""]) for old in summary["renames"])


def test_script_cli(small, tmp_path):
    cmd = [sys.executable, str(SCRIPT), str(small), "--out", str(tmp_path / "o"), "--seed", "1",
           "--share_rename", "0.02"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads((tmp_path / "o" / SUMMARY_NAME).read_text())["counts"]["renamed"] == json.loads(
        done.stdout[: done.stdout.rindex("}") + 1])["renamed"]
    again = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
