"""`leanpremise bench results`: compare tactic-benchmark runs (the original's print_results.py).

Runs are compared only on the theorems every file tested (a theorem "not tested" in any run is left out
of all), in the order the files are given: for each run the count per outcome, solved / tested, the
theorems it gains (solved here, by no earlier run) and loses (solved by an earlier run, not here), and the
cumulative number solved; at the end the cumulative rate.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter

from leanpremise.bench import outcomes
from leanpremise.bench.premises_dir import BenchInputError
from leanpremise.json_files import read_validated


class ResultEntry(BaseModel):
    """One theorem's result in `results_<DATE>-<split>/<model>/<setting>[-k<k>].json` (an object keyed by
    declaration name). Older files may lack `result_emoji`: the outcome is then parsed from the output."""

    model_config = ConfigDict(extra="allow")

    decl_name: str = ""
    module: str = ""
    command: str = ""
    result_emoji: str | None = None
    result_output: str = ""


RESULTS_FILE = TypeAdapter(dict[str, ResultEntry])


@dataclass
class RunSummary:
    path: Path
    counts: Counter  # outcome -> number, over the theorems every run tested
    solved: int
    tested: int
    gains: list[tuple[str, str]] = field(default_factory=list)  # (decl, outcome)
    losses: list[tuple[str, str]] = field(default_factory=list)
    cumulative_solved: int = 0

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".json")

    @property
    def rate(self) -> float:
        return self.solved / self.tested if self.tested else 0.0


@dataclass
class Summary:
    runs: list[RunSummary]
    n_theorems: int  # in any file
    n_common: int  # tested by every file
    cumulative_solved: int

    @property
    def cumulative_rate(self) -> float:
        return self.cumulative_solved / self.n_common if self.n_common else 0.0

    def to_dict(self) -> dict:
        return {
            "n_theorems": self.n_theorems, "n_tested_by_all": self.n_common,
            "cumulative_solved": self.cumulative_solved, "cumulative_rate": self.cumulative_rate,
            "runs": [{"file": str(r.path), "counts": dict(r.counts), "solved": r.solved, "tested": r.tested,
                      "rate": r.rate, "gains": [d for d, _ in r.gains], "losses": [d for d, _ in r.losses],
                      "loss_outcomes": dict(Counter(o for _, o in r.losses)),
                      "cumulative_solved": r.cumulative_solved} for r in self.runs],
        }


def load_outcomes(path: Path) -> dict[str, str]:
    """decl name -> outcome of one results file (recorded emoji, else parsed from its output)."""
    data = read_validated(Path(path), RESULTS_FILE, "results (an object keyed by declaration name)",
                          BenchInputError)
    return {decl: outcomes.outcome_of_entry(entry.model_dump(exclude_none=True)) for decl, entry in data.items()}


def summarize(paths: list[Path]) -> Summary:
    """Compare the runs in `paths`, in order, on the theorems all of them tested."""
    if not paths:
        raise ValueError("no results files given")
    runs = [(Path(p), load_outcomes(p)) for p in paths]
    all_decls: set[str] = set()
    common: set[str] | None = None
    for _, res in runs:
        all_decls |= res.keys()
        tested = {d for d, o in res.items() if o != outcomes.NOT_TESTED}
        common = tested if common is None else common & tested
    assert common is not None
    solved_so_far: set[str] = set()
    summaries = []
    for path, res in runs:
        counts: Counter = Counter()
        gains, losses = [], []
        for decl, outcome in res.items():  # file order, so verbose listings follow the run's own order
            if decl not in common:
                continue
            counts[outcome] += 1
            if outcomes.is_solved(outcome):
                if decl not in solved_so_far:
                    gains.append((decl, outcome))
                    solved_so_far.add(decl)
            elif decl in solved_so_far:
                losses.append((decl, outcome))
        solved = sum(n for o, n in counts.items() if outcomes.is_solved(o))
        tested = sum(n for o, n in counts.items() if o != outcomes.NOT_TESTED)
        summaries.append(RunSummary(path, counts, solved, tested, gains, losses, len(solved_so_far)))
    return Summary(summaries, len(all_decls), len(common), len(solved_so_far))


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{o} {outcomes.label(o)}: {n}" for o, n in counts.most_common()) or "(none)"


def _gains_text(r: RunSummary, position: int) -> str:
    """Gains and losses, saying what they are measured against (the runs listed before this one)."""
    if position == 0:
        return f"gains: {len(r.gains)} (the first run: every theorem it solves), losses: 0"
    loss_counts = Counter(o for _, o in r.losses)
    lost = f"; {', '.join(f'{o}: {n}' for o, n in loss_counts.most_common())}" if loss_counts else ""
    runs = "the run above" if position == 1 else f"the {position} runs above"
    return (f"against {runs}: gains: {len(r.gains)} (solved here, by no run above), "
            f"losses: {len(r.losses)} (solved by a run above, not here{lost})")


def format_summary(summary: Summary, verbose: bool = False) -> str:
    """The printed report; `verbose` lists each gain (+) and loss (-) with its outcome."""
    lines = []
    for i, r in enumerate(summary.runs):
        lines.append(str(r.path))
        lines.append(f"  outcomes: {_counts_text(r.counts)}")
        lines.append(f"  solved: {r.solved} ({r.rate:.2%} of {r.tested} tested)")
        lines.append(f"  {_gains_text(r, i)}")
        if verbose:
            lines += [f"    + {d} {o}" for d, o in r.gains]
            lines += [f"    - {d} {o}" for d, o in r.losses]
        lines.append(f"  cumulative solved: {r.cumulative_solved}")
        lines.append("")
    lines.append(f"theorems in any file: {summary.n_theorems}; tested by every file: {summary.n_common}")
    lines.append(f"cumulative solved: {summary.cumulative_solved} / {summary.n_common} "
                 f"({summary.cumulative_rate:.2%})")
    return "\n".join(lines)


_COLORS = {
    "✅️": "#008000", "✅️(success)": "#008000", "✅️✅️✅️✅️✅️✅️": "#44ce1b",
    "✅️✅️✅️✅️✅️💥️": "#d4e157", "✅️✅️✅️✅️💥️❌️": "#bbdb44", "✅️✅️✅️💥️❌️❌️": "#f7e379",
    "✅️✅️💥️❌️❌️❌️": "#f2a134", "✅️💥️❌️❌️❌️❌️": "#e51f1f", "💥️❌️❌️❌️❌️❌️": "#b71c1c",
    "❌️": "#5f9ea0", "❌️(failure)": "#5f9ea0", "💥️": "#800080", "💥️💥️💥️💥️💥️💥️": "#800080",
    outcomes.TIMEOUT: "#9e9e9e", outcomes.DETERMINISTIC_TIMEOUT: "#616161",
}


def _segments(summary: Summary) -> list[tuple[str, list[str]]]:
    """(label, outcomes) per bar segment: solved first, then the rest by label, one colour per label."""
    present: dict[str, list[str]] = {}
    order = list(_COLORS) + sorted({o for r in summary.runs for o in r.counts} - set(_COLORS))
    for o in order:
        if o == outcomes.NOT_TESTED or not any(r.counts.get(o) for r in summary.runs):
            continue
        present.setdefault(outcomes.label(o), []).append(o)
    return list(present.items())


def plot_summary(summary: Summary, out_path: Path, title: str = "LeanHammer tactic benchmark") -> None:
    """Stacked horizontal bars of outcomes per run (first run on top) with the cumulative-solved line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from leanpremise.atomic import atomic_write_bytes

    n = len(summary.runs)
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(12, 2.5 + 0.6 * n))
    left = np.zeros(n)
    extra = iter(plt.get_cmap("tab20").colors)
    for seg_label, members in _segments(summary):
        counts = np.array([sum(r.counts.get(o, 0) for o in members) for r in summary.runs], dtype=float)
        color = _COLORS.get(members[0]) or next(extra)
        ax.barh(y, counts, left=left, height=0.8, label=seg_label, color=color)
        left += counts
    ax.plot([r.cumulative_solved for r in summary.runs], y, color="black", marker="o", label="Cumulative solved")
    ax.set_yticks(y)
    ax.set_yticklabels([r.name for r in summary.runs])
    ax.set_xlabel("Number of theorems")
    ax.set_title(f"{title} ({summary.n_common} theorems tested by every run)")
    ax.legend(title="Outcome", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(out_path).suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(out_path), buf.getvalue())
