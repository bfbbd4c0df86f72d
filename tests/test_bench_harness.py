"""`leanpremise bench tactic|suite` against a stand-in `lake` (Lean cannot run on the test machines).

The stand-in answers `lake build tactic_benchmark` and `lake exe tactic_benchmark <module> <decl>
<premises_dir> <setting> --k ...` the way the Lean program does: lake's build chatter, then a result line
starting with the outcome symbols; it can also crash, exit non-zero, hang past the timeout (with a child
in its process group that would write a marker file later), or leave a straggler behind. Every call is
logged with what it read from the premises directory.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from leanpremise.bench import harness
from leanpremise.bench.harness import BenchError, TacticBenchConfig, output_name, run_tactic_benchmark
from leanpremise.bench.premises_dir import BenchInputError, load_decls, select_premises
from leanpremise.cli import main
from liveness import LIVENESS_S

FAKE_LAKE = r'''
import json, os, subprocess, sys, time

args = sys.argv[1:]

def record(**kw):
    with open(os.environ["FAKE_LAKE_LOG"], "a") as f:
        f.write(json.dumps(kw) + "\n")

def later_marker(path, delay, quiet):
    """A child in our process group that writes `path` after `delay` s; its pid goes to `path`.pid."""
    code = "import sys, time; time.sleep(float(sys.argv[1])); open(sys.argv[2], 'w').write('too late')"
    out = subprocess.DEVNULL if quiet else None
    child = subprocess.Popen([sys.executable, "-c", code, str(delay), path], stdout=out, stderr=out)
    with open(path + ".pid.tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(path + ".pid.tmp", path + ".pid")

if args[:1] == ["build"]:
    record(kind="build", argv=args, cwd=os.getcwd())
    if os.environ.get("FAKE_LAKE_BUILD_FAIL"):
        print("error: ./.lake/packages/Hammer/Hammer.lean:1:0: unknown module prefix 'Duper'")
        sys.exit(1)
    print("✔ [2045/2045] Built tactic_benchmark")
    sys.exit(0)

assert args[:2] == ["exe", "tactic_benchmark"], args
module, decl, premises_dir, setting = args[2:6]
recommendation = None
path = os.path.join(premises_dir, module + ".jsonl")
if os.path.exists(path):
    for line in open(path):
        entry = json.loads(line)
        if entry["declName"] == decl:
            recommendation = entry["declHammerRecommendation"]
record(kind="exe", argv=args, cwd=os.getcwd(), recommendation=recommendation, pid=os.getpid())
with open(os.environ["FAKE_LAKE_SCRIPT"]) as f:
    b = json.load(f).get(decl, {})
print("⚠ [1203/1205] Replayed Mathlib.Tactic.Common", flush=True)
print("warning: ./.lake/packages/mathlib: repository has local changes", flush=True)
print(f"Testing on alias of {decl} in {module}", flush=True)
time.sleep(b.get("sleep", 0))
if "hang_marker" in b:  # a child in our process group, then hang past the harness's timeout
    later_marker(b["hang_marker"], b.get("delay", 2.0), quiet=False)
    time.sleep(600)
if "straggler_marker" in b:  # exits normally but leaves a helper process behind
    later_marker(b["straggler_marker"], b.get("delay", 2.0), quiet=True)
print(b.get("out", f"✅️ {decl}__eval (0.12s) (1834 heartbeats)"), flush=True)
sys.exit(b.get("rc", 0))
'''


class FakeLake:
    """The stand-in `lake`, its behaviour table and its call log."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir()
        self.path = self.bin / "lake"
        self.path.write_text(f"#!{sys.executable}\n{FAKE_LAKE}")
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)
        self.log = root / "lake-calls.jsonl"
        self.script = root / "lake-script.json"
        self.script.write_text("{}")
        self.ntp = root / "ntp-toolkit"
        self.ntp.mkdir()

    def behave(self, table: dict) -> None:
        self.script.write_text(json.dumps(table))

    def calls(self, kind: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in calls if kind is None or c["kind"] == kind]


@pytest.fixture
def lake(tmp_path, monkeypatch):
    fake = FakeLake(tmp_path)
    monkeypatch.setenv("FAKE_LAKE_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_LAKE_SCRIPT", str(fake.script))
    return fake


THEOREMS = [
    ("Nat.le_of_lt_succ", "Mathlib.Order.Basic"),
    ("Nat.add_sub_cancel_left", "Mathlib.Algebra.Order.Sub.Basic"),
    ("List.length_append", "Mathlib.Data.List.Basic"),
    ("List.map_append", "Mathlib.Data.List.Basic"),
    ("Finset.card_le_card", "Mathlib.Data.Finset.Card"),
    ("Set.subset_union_left", "Mathlib.Data.Set.Basic"),
    ("Real.sqrt_nonneg", "Mathlib.Analysis.SpecialFunctions.Sqrt"),
    ("Int.emod_emod_of_dvd", "Mathlib.Data.Int.GCD"),
    ("Prod.fst_swap_apply", "Mathlib.Data.Prod.Basic"),
    ("Polynomial.degree_C_le", "Mathlib.Algebra.Polynomial.Degree.Definitions"),
    ("Group.inv_inv", "Mathlib.Algebra.Group.Basic"),
]


def write_inputs(root: Path, theorems=THEOREMS, n_premises: int = 40, missing: tuple[str, ...] = ()):
    """`test_decls.json` and `dot_test-tiny-model.json` in the shapes the eval stage writes."""
    decls, retrieved = [], []
    for i, (name, module) in enumerate(theorems):
        gt = [f"{name}.gt{j}" for j in range(3)]
        decls.append({"decl_name": name, "module": module, "idx_in_module": i, "gt_premises": gt,
                      "gt_hints": {p: ("simp" if j == 0 else "notInSimpAll") for j, p in enumerate(gt)}})
        if name in missing:
            continue
        # scores deliberately not sorted (a file from elsewhere): premise p<j> has score (j * 7) % n / n,
        # rerank_score reversed; the ranking is the file order, p0 first
        premises = [{"corpus_id": f"{name}.p{j}", "score": ((j * 7) % n_premises) / n_premises,
                     "rerank_score": -j, "simp_all_hint": "simpPre" if j % 2 else "notInSimpAll"}
                    for j in range(n_premises)]
        retrieved.append({"state_name": f"{module}#{i}", "decl_name": name, "module": module,
                          "idx_in_module": i, "premises": premises})
    d = root / "retrieved_premises"
    d.mkdir(exist_ok=True)
    (d / "test_decls.json").write_text(json.dumps(decls))
    (d / "dot_test-tiny-model.json").write_text(json.dumps(retrieved))
    return d / "test_decls.json", d / "dot_test-tiny-model.json"


def expected_top(name: str, k: int, n: int = 40) -> list[str]:
    """The first k in file order, whatever the scores say (the order is the retriever's ranking)."""
    return [f"({name}.p{j}, notInSimpAll)" for j in range(min(k, n))]


def wait_until(pred, timeout: float) -> bool:
    """Poll `pred` until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def process_gone(pid: int) -> bool:
    """The process no longer runs (it does not exist, or is a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def assert_ended_before_writing(marker: Path) -> None:
    """The marker's writer was started, was killed (wait for that event), and so never wrote the marker."""
    pid_file = marker.with_name(marker.name + ".pid")
    assert pid_file.exists(), f"{marker.name}: the child was never started"
    pid = int(pid_file.read_text())
    assert wait_until(lambda: process_gone(pid), 10), f"{marker.name}: process {pid} still runs"
    assert not marker.exists()


ENTRY_FIELDS = {"decl_name", "module", "command", "result_emoji", "result_output", "returncode", "seconds"}


# ---------------------------------------------------------------- names and premise selection


def test_output_names_follow_the_original():
    base = {"ntp_toolkit_path": Path("."), "decls_file": Path("test_decls.json")}
    dot = Path("dot_test-m.json")
    assert output_name(TacticBenchConfig(**base, setting="aesop_with_premises")) == "aesop_with_premises-gt.json"
    assert output_name(TacticBenchConfig(**base, premises_file=dot, setting="hammerCore_nosimp", k=16)) \
        == "hammerCore_nosimp-k16.json"
    full = TacticBenchConfig(**base, premises_file=dot, setting="aesop_hammerCore_nosimp_with_premises", k=32,
                             k_hammerCore=16, aesopHammerPriority=10, aesopPremisePriority=20, rerank=True,
                             pred_simp_all_hint=True, tag_suffix="v2")
    assert output_name(full) == "aesop_hammerCore_nosimp_with_premises-k32-rr-psah-hp10-pp20-khc16-v2.json"
    # a setting that doesn't use premises doesn't record k
    assert output_name(TacticBenchConfig(**base, premises_file=dot, setting="aesop", k=32)) == "aesop.json"
    assert harness.default_out_dir(Path("r/valid_decls.json"), Path("r/dot_valid-all-MiniLM-L6-v2-lr2e-4.json"),
                                   "apr25") == Path("results_apr25-valid/all-MiniLM-L6-v2-lr2e-4")
    assert harness.default_out_dir(Path("test_decls.json"), None, "may01") == Path("results_may01-test/gt")
    with pytest.raises(BenchError, match="--out_dir"):
        harness.default_out_dir(Path("decls.json"), None)


def test_premise_selection_top_k_hints_and_rerank(tmp_path, caplog):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:2], n_premises=10)
    theorems = load_decls(decls_file)
    with caplog.at_level("WARNING"):
        sel, missing = select_premises(theorems, dot, k=4)
    assert missing == []
    assert sel[0].recommendation() == expected_top("Nat.le_of_lt_succ", 4, 10)
    assert [r.message.split(": ", 1)[1] for r in caplog.records if "rise in file order" in r.message] == [
        ("2 of 2 entries have scores that rise in file order; ranking them in file order (what Lean reads), "
        "not by score")]
    sel, _ = select_premises(theorems, dot, k=3, pred_simp_all_hint=True)
    assert [h for h in sel[0].hints] == ["simpPre" if int(p.rsplit("p", 1)[1]) % 2 else "notInSimpAll"
                                         for p in sel[0].premises]
    sel, _ = select_premises(theorems, dot, k=3, rerank=True)  # rerank_score = -j: the first three
    assert sel[1].premises == [f"Nat.add_sub_cancel_left.p{j}" for j in range(3)]
    # ground truth: every gt premise (k not applied); hints only with pred_simp_all_hint, as the original
    gt, _ = select_premises(load_decls(decls_file, need_ground_truth=True), None, k=1)
    assert gt[0].recommendation() == [f"(Nat.le_of_lt_succ.gt{j}, notInSimpAll)" for j in range(3)]
    gt, _ = select_premises(load_decls(decls_file, need_ground_truth=True), None, k=1, pred_simp_all_hint=True)
    assert gt[0].hints == ["simp", "notInSimpAll", "notInSimpAll"]


def test_premises_dir_lines_keep_their_bytes(tmp_path):
    from leanpremise.bench.premises_dir import PREMISES_LINE, write_premises_dir

    decls_file, dot = write_inputs(tmp_path, THEOREMS[:1], n_premises=2)
    sel, _ = select_premises(load_decls(decls_file), dot, k=2)
    write_premises_dir(tmp_path / "pd", sel)
    text = (tmp_path / "pd" / "Mathlib.Order.Basic.jsonl").read_text(encoding="utf-8")
    assert text == ('{"declName": "Nat.le_of_lt_succ", "declHammerRecommendation": '
                    '["(Nat.le_of_lt_succ.p0, notInSimpAll)", "(Nat.le_of_lt_succ.p1, notInSimpAll)"]}\n')
    assert PREMISES_LINE.validate_json(text).declName == "Nat.le_of_lt_succ"


def test_first_entry_wins_and_wrapped_files_are_read(tmp_path):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:1], n_premises=5)
    entries = json.loads(dot.read_text())
    later = {**entries[0], "premises": [{"corpus_id": "Other.thing", "score": 9.0}]}
    dot.write_text(json.dumps({"dot": entries + [later]}))
    sel, _ = select_premises(load_decls(decls_file), dot, k=2)
    assert "Other.thing" not in sel[0].premises


def test_bad_inputs_name_file_and_entry(tmp_path):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:2], n_premises=3)
    data = json.loads(decls_file.read_text())
    del data[1]["module"]
    decls_file.write_text(json.dumps(data))
    with pytest.raises(BenchInputError, match=r'test_decls.json: entry 1 \("[^"]+"\): field "module": missing'):
        load_decls(decls_file)
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:2], n_premises=3)
    data = json.loads(decls_file.read_text())
    del data[0]["gt_premises"]
    decls_file.write_text(json.dumps(data))
    load_decls(decls_file)  # fine for retrieved premises
    with pytest.raises(BenchInputError, match=r'entry 0 \("[^"]+"\): field "gt_premises": missing'):
        load_decls(decls_file, need_ground_truth=True)
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:2], n_premises=3)
    data = json.loads(dot.read_text())
    for p in data[1]["premises"]:
        del p["rerank_score"]
    dot.write_text(json.dumps(data))
    with pytest.raises(BenchInputError, match=r"Nat.add_sub_cancel_left.*'rerank_score'.*--rerank"):
        select_premises(load_decls(decls_file), dot, k=2, rerank=True)


# ---------------------------------------------------------------- running the benchmark


def test_harness_records_every_outcome_and_kills_timed_out_groups(tmp_path, lake, monkeypatch):
    decls_file, dot = write_inputs(tmp_path, missing=("Group.inv_inv",))
    hang_marker, straggler_marker = tmp_path / "hang-marker", tmp_path / "straggler-marker"
    lake.behave({
        "Nat.le_of_lt_succ": {"out": "✅️✅️✅️✅️✅️✅️ Nat.le_of_lt_succ__eval (2.7s) (18342 heartbeats)"},
        "Nat.add_sub_cancel_left": {"out": "✅️(success) Nat.add_sub_cancel_left__eval (0.4s) (912 heartbeats)",
                                    "straggler_marker": str(straggler_marker), "delay": 1.5},
        "List.length_append": {"out": "✅️✅️✅️💥️❌️❌️ List.length_append__eval (11.2s) (190000 heartbeats)"},
        "List.map_append": {"out": "❌️ List.map_append__eval (0.9s) (4211 heartbeats)"},
        "Finset.card_le_card": {"out": "💥️(subgoals) Finset.card_le_card__eval (1.1s) (3120 heartbeats)"},
        "Set.subset_union_left": {"out": "💥️💥️💥️💥️💥️💥️ Set.subset_union_left__eval (0.2s)", "rc": 1},
        "Real.sqrt_nonneg": {"hang_marker": str(hang_marker), "delay": 2.0},
        "Int.emod_emod_of_dvd": {"out": "aesop_hammerCore_nosimp_with_premises failed with error (deterministic)"
                                        " timeout at `whnf`, maximum number of heartbeats (200000) has been reached",
                                 "rc": 1},
        "Prod.fst_swap_apply": {"out": "uncaught exception: unknown constant 'Prod.fst_swap_apply'", "rc": 1},
        "Polynomial.degree_C_le": {"out": "Segmentation fault (core dumped)", "rc": 139},
    })
    monkeypatch.chdir(tmp_path)
    cfg = TacticBenchConfig(ntp_toolkit_path=lake.ntp, decls_file=decls_file, premises_file=dot,
                            setting="aesop_hammerCore_nosimp_with_premises", k=4, k_hammerCore=2,
                            aesopHammerPriority=10, aesopPremisePriority=20, max_workers=4, timeout=1.0,
                            date="apr25", lake=str(lake.path), progress=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a timeout that kills nothing would hang here
        report = pool.submit(run_tactic_benchmark, cfg).result(timeout=LIVENESS_S)

    out = tmp_path / "results_apr25-test/tiny-model/aesop_hammerCore_nosimp_with_premises-k4-hp10-pp20-khc2.json"
    assert report.out_file.resolve() == out.resolve() and out.exists()
    assert not harness.journal_path(out).exists()
    res = json.loads(out.read_text())
    assert list(res) == [n for n, _ in THEOREMS]  # decls-file order
    emoji = {n: e["result_emoji"] for n, e in res.items()}
    assert emoji == {
        "Nat.le_of_lt_succ": "✅️✅️✅️✅️✅️✅️", "Nat.add_sub_cancel_left": "✅️(success)",
        "List.length_append": "✅️✅️✅️💥️❌️❌️", "List.map_append": "❌️", "Finset.card_le_card": "💥️(subgoals)",
        "Set.subset_union_left": "💥️💥️💥️💥️💥️💥️", "Real.sqrt_nonneg": "⏰", "Int.emod_emod_of_dvd": "❤️",
        "Prod.fst_swap_apply": "not tested", "Polynomial.degree_C_le": "not tested", "Group.inv_inv": "not tested"}
    for name, module in THEOREMS:
        assert res[name]["decl_name"] == name and res[name]["module"] == module
        assert set(res[name]) == ENTRY_FIELDS
    assert res["Set.subset_union_left"]["returncode"] == 1
    assert res["Polynomial.degree_C_le"]["returncode"] == 139
    assert res["Real.sqrt_nonneg"]["returncode"] is None
    assert "timed out after 1 seconds" in res["Real.sqrt_nonneg"]["result_output"]
    assert res["Group.inv_inv"]["command"] == ""  # no retrieved premises: listed, not run
    assert (report.n_run, report.n_resumed, report.n_without_premises) == (10, 0, 1)
    assert report.counts == Counter(emoji.values())
    # lake's build chatter is dropped, the benchmark's own lines are kept
    assert res["List.map_append"]["result_output"] == \
        "Testing on alias of List.map_append in Mathlib.Data.List.Basic\n❌️ List.map_append__eval (0.9s) (4211 heartbeats)"

    builds, exes = lake.calls("build"), lake.calls("exe")
    assert len(builds) == 1 and builds[0]["argv"] == ["build", "tactic_benchmark"]
    assert Path(builds[0]["cwd"]) == lake.ntp
    assert sorted(c["argv"][3] for c in exes) == sorted(n for n, _ in THEOREMS if n != "Group.inv_inv")
    for c in exes:
        name = c["argv"][3]
        assert Path(c["cwd"]) == lake.ntp
        assert c["argv"][5:] == ["aesop_hammerCore_nosimp_with_premises", "--k", "4", "--aesopHammerPriority",
                                 "10", "--aesopPremisePriority", "20", "--hammerCoreK", "2"]
        assert c["recommendation"] == expected_top(name, 4)
        assert res[name]["command"].split()[1:] == c["argv"]
    premises_dir = Path(exes[0]["argv"][4])
    assert premises_dir.is_absolute() and not premises_dir.exists()  # temp dir removed

    # the hung run's whole process group was killed, its child included, before the child wrote its
    # marker; likewise the straggler a finished run left behind
    assert_ended_before_writing(hang_marker)
    assert_ended_before_writing(straggler_marker)


def test_existing_results_need_resume_or_overwrite(tmp_path, lake):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:3])
    cfg = {"ntp_toolkit_path": lake.ntp, "decls_file": decls_file, "premises_file": dot,
           "setting": "hammerCore_nosimp", "k": 2, "out_dir": tmp_path / "out", "lake": str(lake.path),
           "progress": False}
    run_tactic_benchmark(TacticBenchConfig(**cfg))
    with pytest.raises(BenchError, match="--resume"):
        run_tactic_benchmark(TacticBenchConfig(**cfg))
    report = run_tactic_benchmark(TacticBenchConfig(**cfg, resume=True))
    assert report.n_run == 0 and report.n_resumed == 3
    assert len(lake.calls("build")) == 1  # nothing to do: no build either
    run_tactic_benchmark(TacticBenchConfig(**cfg, overwrite=True))
    assert len(lake.calls("exe")) == 6


def test_build_failure_and_missing_lake_are_clear(tmp_path, lake, monkeypatch, capsys):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:2])
    monkeypatch.setenv("FAKE_LAKE_BUILD_FAIL", "1")
    args = ["bench", "tactic", "--ntp_toolkit_path", str(lake.ntp), "--decls_file", str(decls_file),
            "--premises_file", str(dot), "--benchmark_type", "hammerCore_nosimp", "--out_dir",
            str(tmp_path / "out"), "--lake", str(lake.path), "--no_progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "lake build tactic_benchmark` failed" in err and "unknown module prefix 'Duper'" in err
    assert lake.calls("exe") == []
    assert main(args[:-3] + ["--lake", str(tmp_path / "no-such-lake"), "--no_progress"]) == 1
    assert f"lake executable '{tmp_path / 'no-such-lake'}' not found" in capsys.readouterr().err


def test_cli_finds_lake_on_path_and_uses_ground_truth(tmp_path, lake, monkeypatch, capsys):
    decls_file, _ = write_inputs(tmp_path, THEOREMS[:3])
    monkeypatch.setenv("PATH", f"{lake.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    rc = main(["bench", "tactic", "--ntp_toolkit_path", str(lake.ntp), "--decls_file", str(decls_file),
               "--benchmark_type", "aesop_with_premises", "--date", "jan13", "--no_progress"])
    assert rc == 0
    out = tmp_path / "results_jan13-test/gt/aesop_with_premises-gt.json"
    res = json.loads(out.read_text())
    assert all(e["result_emoji"] == "✅️" for e in res.values())
    for c in lake.calls("exe"):
        name = c["argv"][3]
        assert c["recommendation"] == [f"({name}.gt{j}, notInSimpAll)" for j in range(3)]
        assert c["argv"][6:] == ["--k", "8"]
    assert ("results_jan13-test/gt/aesop_with_premises-gt.json: ran 3, resumed 0, without premises 0; solved 3; "
            "✅️: 3") in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_keeps_results_and_resumes(tmp_path, lake, sig):
    theorems = THEOREMS[:5]
    decls_file, dot = write_inputs(tmp_path, theorems)
    markers = {n: tmp_path / f"marker-{i}" for i, (n, _) in enumerate(theorems[2:])}
    lake.behave({n: {"hang_marker": str(m), "delay": 2.5} for n, m in markers.items()})
    out_dir = tmp_path / "out"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cmd = [sys.executable, "-m", "leanpremise", "bench", "tactic", "--ntp_toolkit_path", str(lake.ntp),
           "--decls_file", str(decls_file), "--premises_file", str(dot), "--benchmark_type", "hammerCore_nosimp",
           "--k", "3", "--out_dir", str(out_dir), "--lake", str(lake.path), "--timeout", "60",
           "--max_workers", "5", "--scratch_dir", str(scratch), "--no_progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    journal = out_dir / "hammerCore_nosimp-k3.json.partial.jsonl"
    try:
        assert wait_until(lambda: journal.exists() and len(journal.read_text().splitlines()) == 2
                          and len(lake.calls("exe")) == 5, 30), proc.stderr
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=LIVENESS_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert f"interrupted: 2 results kept in {journal}; rerun with --resume to finish" in err
    assert not (out_dir / "hammerCore_nosimp-k3.json").exists()
    kept = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(e["decl_name"] for e in kept) == sorted(n for n, _ in theorems[:2])
    assert list(scratch.iterdir()) == []  # the temp premises dir is gone
    for marker in markers.values():  # the hung Lean runs were ended, group and all
        assert_ended_before_writing(marker)

    lake.behave({})  # everything finishes now
    assert main(cmd[3:-1] + ["--resume", "--no_progress"]) == 0
    second = lake.calls("exe")[5:]
    assert sorted(c["argv"][3] for c in second) == sorted(markers)  # only the unfinished theorems ran
    res = json.loads((out_dir / "hammerCore_nosimp-k3.json").read_text())
    assert list(res) == [n for n, _ in theorems]
    assert all(e["result_emoji"] == "✅️" for e in res.values())
    assert not journal.exists()


def test_suite_runs_the_paper_settings_and_gt(tmp_path, lake, capsys):
    decls_file, _ = write_inputs(tmp_path, THEOREMS[:3])
    rc = main(["bench", "suite", "tiny-model", "--gt", "--ntp_toolkit_path", str(lake.ntp), "--split", "test",
               "--retrieved_dir", str(decls_file.parent), "--results_root", str(tmp_path), "--date", "apr25",
               "--lake", str(lake.path), "--timeout", "20", "--no_progress"])
    assert rc == 0
    model_dir, gt_dir = tmp_path / "results_apr25-test/tiny-model", tmp_path / "results_apr25-test/gt"
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([
        "aesop_with_premises-k32.json", "hammerCore_nosimp-k16.json", "aesop_hammerCore_nosimp-k16.json",
        "aesop_hammerCore_nosimp_with_premises-k32-hp10-pp20-khc16.json"])
    assert sorted(p.name for p in gt_dir.iterdir()) == sorted([
        "aesop_with_premises-gt.json", "hammerCore_nosimp-gt.json", "aesop_hammerCore_nosimp-gt.json",
        "aesop_hammerCore_nosimp_with_premises-gt.json"])
    assert len(lake.calls("build")) == 1
    flags = {}
    for c in lake.calls("exe"):
        flags.setdefault((c["argv"][5], "gt" if "gt0" in str(c["recommendation"]) else "model"), set()).add(
            (" ".join(c["argv"][6:]), len(c["recommendation"])))
    assert flags[("aesop_with_premises", "model")] == {("--k 32", 32)}
    assert flags[("hammerCore_nosimp", "model")] == {("--k 16", 16)}
    assert flags[("aesop_hammerCore_nosimp", "model")] == {("--k 16", 16)}
    assert flags[("aesop_hammerCore_nosimp_with_premises", "model")] == {
        ("--k 32 --aesopHammerPriority 10 --aesopPremisePriority 20 --hammerCoreK 16", 32)}
    assert flags[("aesop_hammerCore_nosimp_with_premises", "gt")] == {("--k 8", 3)}
    out = capsys.readouterr().out
    assert "cumulative solved: 3 / 3 (100.00%)" in out


def test_resume_reads_a_journal_cut_short_by_a_crash(tmp_path, lake):
    decls_file, dot = write_inputs(tmp_path, THEOREMS[:3])
    cfg = TacticBenchConfig(ntp_toolkit_path=lake.ntp, decls_file=decls_file, premises_file=dot,
                            setting="hammerCore_nosimp", k=2, out_dir=tmp_path / "out", lake=str(lake.path),
                            progress=False, resume=True)
    journal = harness.journal_path(harness.output_path(cfg))
    journal.parent.mkdir(parents=True)
    done = {"decl_name": THEOREMS[0][0], "module": THEOREMS[0][1], "command": "lake exe tactic_benchmark ...",
            "result_emoji": "❌️", "result_output": "❌️ Nat.le_of_lt_succ__eval (3.0s)"}
    journal.write_text(json.dumps(done) + "\n" + json.dumps({**done, "decl_name": THEOREMS[1][0]})[:40])
    report = run_tactic_benchmark(cfg)
    assert report.n_resumed == 1 and report.n_run == 2
    assert sorted(c["argv"][3] for c in lake.calls("exe")) == sorted(n for n, _ in THEOREMS[1:3])
    res = json.loads(report.out_file.read_text())
    assert res[THEOREMS[0][0]]["result_emoji"] == "❌️" and res[THEOREMS[1][0]]["result_emoji"] == "✅️"
    journal.write_text("not json\n" + json.dumps(done) + "\n")
    with pytest.raises(BenchError, match=r"partial.jsonl:1: not valid JSON"):
        run_tactic_benchmark(cfg)
