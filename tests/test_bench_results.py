"""`leanpremise bench results` on recorded results files covering every outcome symbol."""

import json
from pathlib import Path

import pytest

from leanpremise.bench import results
from leanpremise.bench.premises_dir import BenchInputError
from leanpremise.cli import main

RUN_DIR = Path(__file__).parent / "data/bench/results_apr25-test/all-MiniLM-L6-v2-lr2e-4-bs256-nneg3-ml-ne5"
AESOP = RUN_DIR / "aesop_with_premises-k32.json"
AUTO = RUN_DIR / "hammerCore_nosimp-k16.json"
FULL = RUN_DIR / "aesop_hammerCore_nosimp_with_premises-k32-hp10-pp20-khc16.json"


def test_recorded_files_cover_every_outcome():
    seen = set()
    for path in (AESOP, AUTO, FULL):
        seen |= set(results.load_outcomes(path).values())
    assert {"✅️", "✅️(success)", "✅️✅️✅️✅️✅️✅️", "❌️", "💥️", "💥️(subgoals)", "💥️(notDefEq)", "💥️(noJSON)",
            "✅️✅️✅️✅️✅️💥️", "✅️✅️✅️✅️💥️❌️", "✅️✅️✅️💥️❌️❌️", "✅️✅️💥️❌️❌️❌️", "✅️💥️❌️❌️❌️❌️",
            "💥️💥️💥️💥️💥️💥️", "⏰", "❤️", "not tested"} <= seen


def test_summary_compares_on_commonly_tested_theorems():
    s = results.summarize([AESOP, AUTO, FULL])
    # Prod.fst_swap_apply is "unknown constant" in the auto run; Matrix.det_fin_two_of has no premises
    # and appears only in the aesop file: both are left out of every comparison.
    assert s.n_theorems == 11 and s.n_common == 9
    aesop, auto, full = s.runs
    assert [r.tested for r in s.runs] == [9, 9, 9]
    assert sum(aesop.counts.values()) == 9 and "not tested" not in aesop.counts
    assert aesop.counts["❌️"] == 2 and aesop.counts["✅️"] == 2 and aesop.counts["⏰"] == 1
    assert [r.solved for r in s.runs] == [3, 3, 4]
    assert [d for d, _ in aesop.gains] == ["Nat.le_of_lt_succ", "List.length_append", "Group.inv_inv"]
    assert aesop.losses == []
    assert auto.gains == [("Nat.add_sub_cancel_left", "✅️✅️✅️✅️✅️✅️")]
    assert auto.losses == [("List.length_append", "✅️✅️✅️💥️❌️❌️")]
    assert full.gains == [("Finset.card_le_card", "✅️(success)")]
    assert full.losses == [("List.length_append", "❌️")]
    # Group.inv_inv in the full run has no result_emoji (an older file): it is parsed from the output.
    assert full.counts["✅️"] == 3
    assert [r.cumulative_solved for r in s.runs] == [3, 4, 5]
    assert s.cumulative_solved == 5 and s.cumulative_rate == pytest.approx(5 / 9)


def test_order_of_files_changes_gains_not_counts():
    fwd = results.summarize([AESOP, FULL])
    back = results.summarize([FULL, AESOP])
    assert fwd.runs[1].counts == back.runs[0].counts
    assert len(fwd.runs[1].gains) == 2 and len(back.runs[1].gains) == 1  # aesop adds only List.length_append
    # Prod.fst_swap_apply is tested (and solved) by both of these runs, so it now counts
    assert fwd.n_common == back.n_common == 10
    assert fwd.cumulative_solved == back.cumulative_solved == 6


def test_cli_prints_summary_plot_and_json(tmp_path, capsys):
    plot, js = tmp_path / "out.png", tmp_path / "summary.json"
    rc = main(["bench", "results", str(AESOP), str(AUTO), str(FULL), "--verbose", "--plot", str(plot),
               "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "solved: 3 (33.33% of 9 tested)" in out
    assert "gains: 3 (the first run: every theorem it solves), losses: 0\n" in out
    assert ("against the run above: gains: 1 (solved here, by no run above), "
            "losses: 1 (solved by a run above, not here; ✅️✅️✅️💥️❌️❌️: 1)\n") in out
    assert "against the 2 runs above: gains: 1 (solved here, by no run above), losses: 1" in out
    assert "+ Finset.card_le_card ✅️(success)" in out and "- List.length_append ❌️" in out
    assert "\ncumulative solved: 5 / 9 (55.56%)\n" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    data = json.loads(js.read_text())
    assert [r["cumulative_solved"] for r in data["runs"]] == [3, 4, 5]
    assert data["runs"][1]["loss_outcomes"] == {"✅️✅️✅️💥️❌️❌️": 1}


def test_without_verbose_no_listing(capsys):
    assert main(["bench", "results", str(AESOP), str(FULL)]) == 0
    out = capsys.readouterr().out
    assert "+ " not in out and "cumulative solved: 6 / 10 (60.00%)" in out


def test_plot_segments_one_per_label():
    s = results.summarize([AESOP, AUTO, FULL])
    segs = dict(results._segments(s))
    assert segs["Solved"] == ["✅️", "✅️(success)"]
    assert "N/A" not in segs  # untested theorems are not drawn
    assert sum(len(v) for v in segs.values()) == len({o for r in s.runs for o in r.counts})


def test_bad_results_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text('{"Nat.foo": "✅️"}')
    with pytest.raises(BenchInputError, match="broken.json: entry 'Nat.foo': Input should be an object"):
        results.load_outcomes(bad)
    assert main(["bench", "results", str(bad)]) == 1
    assert "broken.json" in capsys.readouterr().err
    (tmp_path / "trunc.json").write_text('{"Nat.foo": {')
    with pytest.raises(BenchInputError, match="trunc.json: not valid JSON"):
        results.load_outcomes(tmp_path / "trunc.json")
