"""Field types of the JSONL inputs are checked, never coerced; unreadable inputs are one clear error."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from conftest import decl, make_data_dir, state
from leanpremise.data import DataConfig, load_corpus, load_dataset
from leanpremise.data.errors import DataLayoutError


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data", ["Mathlib.A", "Mathlib.B"], {"Mathlib.B": ["Mathlib.A"]},
                         {"Mathlib.A": [decl("a1", 1), decl("a2", 2)], "Mathlib.B": [decl("b1", 1)]},
                         {"Mathlib.B": [state("b1", 2, recs=["a1"]), state("b1", 3, recs=["a2"])]})


def load(data_dir, workers=1, cache=None):
    return load_dataset(DataConfig(data_dir=data_dir, use_data_cache=cache is not None, cache_dir=cache,
                                   workers=workers, n_test=1, n_valid=0))


def insert_lines(path, rows, at=1):
    """Insert JSON rows (dicts, or raw text) after the first `at` lines of a JSONL file."""
    lines = path.read_text().splitlines()
    new = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines[:at] + new + lines[at:]) + "\n")


def file_warnings(caplog, path):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def bad_decl(**fields):
    row = decl("bad", 7)
    row.update(fields)
    return {k: v for k, v in row.items() if v is not ...}


DECL_CASES = {
    "name_null": (bad_decl(name=None), "'name' is null"),
    "kind_list": (bad_decl(kind=["theorem"]), "'kind' is a list"),
    "doc_int": (bad_decl(doc=5), "'doc' is 5"),
    "args_str": (bad_decl(args="(a : M)"), "'args' is a string"),
    "args_ints": (bad_decl(args=[1, 2]), "'args' is a list holding a non-string"),
    "type_null": (bad_decl(type=None), "'type' is null"),
    "line_2_31": (bad_decl(line=2**31), "'line' is 2147483648"),
    "line_huge": (bad_decl(line=10**30), "'line' is"),
    "line_negative": (bad_decl(line=-1), "'line' is -1"),
    "column_negative": (bad_decl(column=-3), "'column' is -3"),
    "line_bool": (bad_decl(line=True), "'line' is true"),
    "line_float": (bad_decl(line=1.0), "'line' is 1.0"),
    "isProp_str": (bad_decl(isProp="yes"), "'isProp' is a string"),
    "isHumanTheorem_int": (bad_decl(isHumanTheorem=1), "'isHumanTheorem' is 1"),
    "isExposed_null": (bad_decl(isExposed=None), "'isExposed' is null"),
}


@pytest.mark.parametrize("case", list(DECL_CASES))
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_declaration_field_is_skipped_with_one_warning(data_dir, caplog, case, workers):
    row, why = DECL_CASES[case]
    path = data_dir / "Declarations" / "Mathlib.A.jsonl"
    insert_lines(path, [row, row], at=1)  # lines 2 and 3
    with caplog.at_level(logging.WARNING):
        ds = load(data_dir, workers=workers)
    assert sorted(ds.corpus.unfiltered_names) == ["a1", "a2", "b1"]  # nothing coerced into a premise
    (warning,) = file_warnings(caplog, path)
    assert "skipped 2" in warning and "line 2 (" in warning and why in warning
    assert ds.bad_lines.count == 2
    # the good lines keep their positions
    assert ds.corpus.line[ds.corpus.name_to_id["a2"]] == 2


def test_good_optional_fields_are_accepted(data_dir):
    path = data_dir / "Declarations" / "Mathlib.A.jsonl"
    insert_lines(path, [bad_decl(name="ok1", doc="a doc", inModuleSystem=True),
                        {k: v for k, v in decl("ok2", 8).items() if k not in ("doc", "isProp", "isHumanTheorem")}])
    ds = load(data_dir)
    assert ds.bad_lines.count == 0
    c = ds.corpus
    assert c.text(c.name_to_id["ok1"]) == "/-- a doc -/\ntheorem ok1  : True"
    assert c.in_module_system[c.name_to_id["ok1"]] and not c.is_human[c.name_to_id["ok2"]]


STATE_CASES = {
    "declName_null": ({"declName": None}, "'declName' is null"),
    "state_int": ({"state": 5}, "'state' is 5"),
    "src_null": ({"srcUpToTactic": None}, "'srcUpToTactic' is null"),
    "recs_str": ({"declHammerRecommendation": "(a1, notInSimpAll)"}, "'declHammerRecommendation' is a string"),
    "recs_ints": ({"declHammerRecommendation": [1]}, "'declHammerRecommendation' is a list holding a non-string"),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_bad_state_field_is_skipped_with_one_warning(data_dir, caplog, case):
    change, why = STATE_CASES[case]
    path = data_dir / "TrainingDataWithPremises" / "Mathlib.B.jsonl"
    insert_lines(path, [{**state("b1", 5, recs=["a1"]), **change}] * 3, at=0)  # lines 1-3
    with caplog.at_level(logging.WARNING):
        ds = load(data_dir)
    assert ds.states.decl_name == ["b1", "b1"] and list(ds.states.idx_in_module) == [3, 4]
    (warning,) = file_warnings(caplog, path)
    assert "skipped 3" in warning and "line 1 (" in warning and why in warning


def test_bad_module_and_import_names_are_skipped_not_named_none(data_dir, caplog):
    insert_lines(data_dir / "Modules.jsonl", [{"name": None}])
    imports = data_dir / "Imports" / "Mathlib.B.jsonl"
    insert_lines(imports, [{"name": None, "isDirect": True}, {"name": 7, "isDirect": True}], at=0)
    with caplog.at_level(logging.WARNING):
        ds = load(data_dir)
    assert "None" not in ds.corpus.modules and "7" not in ds.corpus.modules
    assert ds.corpus.listed_modules == ["Mathlib.A", "Mathlib.B"]
    b = ds.corpus.module_index["Mathlib.B"]
    assert [ds.corpus.modules[m] for m in ds.corpus.imports_of(b)] == ["Mathlib.A"]
    (warning,) = file_warnings(caplog, imports)
    assert "skipped 2" in warning and "line 1 (field 'name' is null" in warning
    (warning,) = file_warnings(caplog, data_dir / "Modules.jsonl")
    assert "line 2 (field 'name' is null" in warning


def test_blacklist_names_must_be_strings(data_dir):
    (data_dir / "HammerBlacklist.jsonl").write_text(json.dumps({"hammerBlacklist": ["a1", None]}))
    with pytest.raises(DataLayoutError, match="HammerBlacklist.jsonl.*strings"):
        load(data_dir)


def _symlink_loop(path):
    os.symlink(path.name, path)  # a link to itself


OS_CASES = {
    "declarations_symlink_loop": lambda d: _symlink_loop(d / "Declarations" / "Mathlib.C.jsonl"),
    "states_symlink_loop": lambda d: _symlink_loop(d / "TrainingDataWithPremises" / "Mathlib.C.jsonl"),
    "imports_symlink_loop": lambda d: _symlink_loop(d / "Imports" / "Mathlib.C.jsonl"),
    "declarations_dir_named_jsonl": lambda d: (d / "Declarations" / "Mathlib.C.jsonl").mkdir(),
    "imports_dir_named_jsonl": lambda d: (d / "Imports" / "Mathlib.C.jsonl").mkdir(),
    "modules_symlink_loop": lambda d: ((d / "Modules.jsonl").unlink(), _symlink_loop(d / "Modules.jsonl")),
    "revision_dir": lambda d: ((d / "revision").unlink(), (d / "revision").mkdir()),
    "blacklist_dir": lambda d: ((d / "HammerBlacklist.jsonl").unlink(), (d / "HammerBlacklist.jsonl").mkdir()),
}
OS_PATHS = {
    "declarations_symlink_loop": "Declarations/Mathlib.C.jsonl",
    "states_symlink_loop": "TrainingDataWithPremises/Mathlib.C.jsonl",
    "imports_symlink_loop": "Imports/Mathlib.C.jsonl",
    "declarations_dir_named_jsonl": "Declarations/Mathlib.C.jsonl",
    "imports_dir_named_jsonl": "Imports/Mathlib.C.jsonl",
    "modules_symlink_loop": "Modules.jsonl",
    "revision_dir": "revision",
    "blacklist_dir": "HammerBlacklist.jsonl",
}


@pytest.mark.parametrize("case", list(OS_CASES))
@pytest.mark.parametrize("mode", ["serial", "parallel", "cached"])
def test_unreadable_input_is_one_error_naming_the_path(data_dir, tmp_path, case, mode):
    OS_CASES[case](data_dir)
    with pytest.raises(DataLayoutError) as e:
        load(data_dir, workers=2 if mode == "parallel" else 1, cache=tmp_path / "c" if mode == "cached" else None)
    message = str(e.value)
    assert str(data_dir / OS_PATHS[case]) in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_names_the_path(data_dir):
    path = data_dir / "Declarations" / "Mathlib.A.jsonl"
    path.chmod(0)
    try:
        with pytest.raises(DataLayoutError, match="Mathlib.A.jsonl: cannot read"):
            load_corpus(DataConfig(data_dir=data_dir, use_data_cache=False))
    finally:
        path.chmod(0o644)


def test_cli_prints_one_line_and_exits_2(data_dir, tmp_path):
    (data_dir / "Declarations" / "Mathlib.C.jsonl").mkdir()
    env = dict(os.environ, LEANPREMISE_CACHE_DIR=str(tmp_path / "c"))
    out = subprocess.run([sys.executable, "-m", "leanpremise", "data", "stats", str(data_dir)],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("leanpremise data stats: error: ")
    assert str(data_dir / "Declarations" / "Mathlib.C.jsonl") in line and "Is a directory" in line
