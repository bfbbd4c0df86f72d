"""`bench suite` chooses ground-truth runs by flag, never by a model's name; a premises dir built from the
decls file's `module` field stays inside its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leanpremise.bench.premises_dir import BenchInputError, Selection, Theorem, load_decls, write_premises_dir
from leanpremise.bench.suite import SuiteConfig, plan
from leanpremise.cli import main


def _suite(tmp_path: Path, model: str, **kw) -> SuiteConfig:
    return SuiteConfig(model=model, ntp_toolkit_path=tmp_path, retrieved_dir=tmp_path / "rp", date="apr25",
                       results_root=tmp_path, **kw)


def test_a_model_named_gte_small_uses_its_own_premises(tmp_path):
    runs = plan(_suite(tmp_path, "gte-small"))
    assert len(runs) == 4
    assert {r.premises_file for r in runs} == {tmp_path / "rp" / "dot_test-gte-small.json"}
    assert {r.out_dir for r in runs} == {tmp_path / "results_apr25-test" / "gte-small"}


def test_ground_truth_runs_come_from_the_flags(tmp_path):
    both = plan(_suite(tmp_path, "gte-small", gt=True))
    assert [r.premises_file is None for r in both] == [False] * 4 + [True] * 4
    assert {r.out_dir for r in both[4:]} == {tmp_path / "results_apr25-test" / "gt"}
    only = plan(_suite(tmp_path, "gt-reference", gt_only=True))
    assert [r.premises_file for r in only] == [None] * 4
    assert {r.out_dir for r in only} == {tmp_path / "results_apr25-test" / "gt-reference"}


def test_an_old_gt_model_name_without_the_flag_is_explained(tmp_path, capsys):
    (tmp_path / "rp").mkdir()
    rc = main(["bench", "suite", "gt", "--ntp_toolkit_path", str(tmp_path), "--retrieved_dir",
               str(tmp_path / "rp"), "--dry_run"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dot_test-gt.json: no such file" in err[0] and "--gt_only" in err[0]
    assert main(["bench", "suite", "gt", "--gt_only", "--ntp_toolkit_path", str(tmp_path), "--retrieved_dir",
                 str(tmp_path / "rp"), "--dry_run"]) == 0
    assert capsys.readouterr().out.count("(ground truth)") == 4


@pytest.mark.parametrize("module", ["../../etc/x", "/etc/x", "Mathlib/Logic", "..", ".hidden", "", "a\\b"])
def test_a_module_that_would_leave_the_premises_dir_is_refused_in_one_line(tmp_path, module):
    path = tmp_path / "test_decls.json"
    path.write_text(json.dumps([{"decl_name": "ok", "module": "Mathlib.Logic.Basic"},
                                {"decl_name": "Evil.thm", "module": module}]))
    with pytest.raises(BenchInputError) as err:
        load_decls(path)
    message = str(err.value)
    assert message.startswith(f'{path}: entry 1 ("Evil.thm"): field "module": ') and "\n" not in message


def test_write_premises_dir_writes_nothing_outside_its_folder(tmp_path):
    target = tmp_path / "premises"
    good = Selection(Theorem("A.a", "Mathlib.Logic.Basic"), ["p"], ["notInSimpAll"])
    evil = Selection(Theorem("B.b", "../escaped"), ["p"], ["notInSimpAll"])
    with pytest.raises(BenchInputError, match=r"B\.b: module '\.\./escaped'"):
        write_premises_dir(target, [good, evil])
    assert not (tmp_path / "escaped.jsonl").exists()
    write_premises_dir(target, [good])
    assert [p.name for p in target.iterdir()] == ["Mathlib.Logic.Basic.jsonl"]
