"""`leanpremise bench tactic|suite|results`: LeanHammer's tactic benchmark and its summary."""

from __future__ import annotations

import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leanpremise.flags import from_args, switch

log = logging.getLogger(__name__)

DECLS_FILE_ALIASES = ["--decl_names_file"]
"""The original scripts' name of --decls_file."""


@dataclass(kw_only=True)
class RunFlags:
    """How the Lean runs of `tactic` and `suite` go."""

    ntp_toolkit_path: Path = field(metadata={
        "help": "ntp-toolkit checkout at the tacticBenchmark branch (where `lake` runs)"})
    timeout: float = field(default=300, metadata={"help": "seconds per theorem"})
    date: str | None = field(default=None, metadata={
        "help": "<date> in results_<date>-<split> (default: today, e.g. apr25)"})
    resume: bool = switch("keep finished theorems of an earlier run")
    overwrite: bool = switch("start again even if results exist")
    skip_build: bool = switch("don't run `lake build tactic_benchmark` first")
    lake: str = field(default="lake", metadata={"help": "lake executable (default: `lake` on PATH)"})
    scratch_dir: Path | None = field(default=None, metadata={
        "help": "parent of the temporary premises directory"})
    print_results: bool = switch("print each outcome")
    no_progress: bool = switch("no progress bar")


@dataclass(kw_only=True)
class TacticFlags:
    decls_file: Path = field(metadata={
        "aliases": DECLS_FILE_ALIASES,
        "help": "<split>_decls.json written by `leanpremise eval export-decls`"})
    premises_file: Path | None = field(default=None, metadata={
        "help": "dot_<split>-<model>.json of retrieved premises (default: ground-truth premises)"})
    setting: str = field(default="simp_all_with_premises", metadata={
        "aliases": ["--benchmark_type"],
        "help": "tactic_benchmark setting, e.g. aesop_with_premises, hammerCore_nosimp, "
                "aesop_hammerCore_nosimp, aesop_hammerCore_nosimp_with_premises (any other name is passed "
                "through)"})
    k: int = field(default=8, metadata={"help": "number of top premises to give"})
    k_hammerCore: int | None = field(default=None, metadata={
        "help": "premises for hammerCore in the full setting (--hammerCoreK; default: k)"})
    aesopHammerPriority: int | None = None
    aesopPremisePriority: int | None = None
    pred_simp_all_hint: bool = switch("use predicted (or ground-truth) simp_all hints instead of "
                                      "notInSimpAll")
    rerank: bool = switch("rank retrieved premises by rerank_score")
    out_dir: Path | None = field(default=None, metadata={
        "help": "default: results_<date>-<split>/<model>/ in the working directory"})
    tag_suffix: str | None = field(default=None, metadata={"help": "suffix of the results file name"})
    max_workers: int = field(default=8, metadata={"help": "parallel Lean runs"})


@dataclass
class SuiteFlags:
    split: Literal["valid", "test"] = "test"
    retrieved_dir: Path = Path("retrieved_premises")
    decls_file: Path | None = field(default=None, metadata={
        "aliases": DECLS_FILE_ALIASES, "help": "default: <retrieved_dir>/<split>_decls.json"})
    premises_file: Path | None = field(default=None, metadata={
        "help": "default: <retrieved_dir>/dot_<split>-<model>.json"})
    results_root: Path = field(default=Path("."), metadata={
        "help": "where results_<date>-<split>/<model>/ goes (default: working directory)"})
    settings: list[str] | None = field(default=None, metadata={
        "help": "settings to run (default: the paper's four; the original also ran `duper`)"})
    gt: bool = switch("also run the settings on ground-truth premises")
    gt_only: bool = switch("run only the settings on ground-truth premises, results under <model>/ "
                           "(a model name is never taken to mean ground truth)")
    k: int = 32
    k_hammerCore: int = 16
    aesopHammerPriority: int = 10
    aesopPremisePriority: int = 20
    max_workers: int = field(default=16, metadata={"help": "parallel Lean runs"})
    dry_run: bool = switch("print the planned runs and exit")


@dataclass
class ResultsFlags:
    # `--verbose` keeps its dest: the top-level `-v/--verbose` (debug logging) is `verbose`.
    verbose: bool = switch("list every gained (+) and lost (-) theorem", dest="list_changes")
    plot: Path | None = field(default=None, metadata={
        "help": "write the stacked bar chart here (e.g. out.png)"})
    json: Path | None = field(default=None, metadata={"help": "also write the summary as JSON here"})


def register(sub) -> None:
    bench = sub.add_parser("bench", help="LeanHammer tactic benchmark: run it and summarise results")
    bsub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)

    tactic = bsub.add_parser("tactic", dataclass_types=[RunFlags, TacticFlags],
                             help="run one setting of the tactic benchmark over a decls file")
    tactic.set_defaults(func=_tactic)

    suite = bsub.add_parser("suite", dataclass_types=[RunFlags, SuiteFlags],
                            help="the paper's four settings for one model (and the gt runs)")
    suite.add_argument("model", help="model name as in retrieved_premises/dot_<split>-<model>.json "
                                     "(with --gt_only: the name of the results folder, e.g. gt)")
    suite.set_defaults(func=_suite)

    results = bsub.add_parser("results", dataclass_types=[ResultsFlags],
                              help="summarise results files: outcomes, gains/losses, cumulative")
    results.add_argument("files", nargs="+", type=Path, help="results JSON files, compared in this order")
    results.set_defaults(func=_results)


def _runner_kwargs(lean: RunFlags, max_workers: int) -> dict:
    return {"timeout": lean.timeout, "resume": lean.resume, "overwrite": lean.overwrite,
            "skip_build": lean.skip_build, "lake": lean.lake, "scratch_dir": lean.scratch_dir,
            "verbose": lean.print_results, "progress": not lean.no_progress, "max_workers": max_workers}


def _sigterm_as_interrupt() -> None:
    """Let SIGTERM unwind like Ctrl-C, so the Lean process groups are ended and the temp dir removed."""
    def handler(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, handler)


def _run_guarded(fn) -> int:
    from leanpremise.bench.harness import BenchError
    from leanpremise.bench.premises_dir import BenchInputError

    _sigterm_as_interrupt()
    try:
        return fn()
    except (BenchError, BenchInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished theorems are kept (rerun with --resume)", file=sys.stderr)
        return 130


def _print_report(report) -> None:
    from leanpremise.bench.outcomes import is_solved

    solved = sum(n for o, n in report.counts.items() if is_solved(o))
    print(f"{report.out_file}: ran {report.n_run}, resumed {report.n_resumed}, "
          f"without premises {report.n_without_premises}; solved {solved}; "
          + ", ".join(f"{o}: {n}" for o, n in report.counts.most_common()))


def _tactic(args) -> int:
    from leanpremise.bench.harness import TacticBenchConfig, run_tactic_benchmark

    lean, t = from_args(args, RunFlags, TacticFlags)
    cfg = TacticBenchConfig(
        ntp_toolkit_path=lean.ntp_toolkit_path, decls_file=t.decls_file, premises_file=t.premises_file,
        setting=t.setting, k=t.k, k_hammerCore=t.k_hammerCore,
        aesopHammerPriority=t.aesopHammerPriority, aesopPremisePriority=t.aesopPremisePriority,
        pred_simp_all_hint=t.pred_simp_all_hint, rerank=t.rerank, out_dir=t.out_dir,
        tag_suffix=t.tag_suffix, date=lean.date, **_runner_kwargs(lean, t.max_workers))

    def go() -> int:
        _print_report(run_tactic_benchmark(cfg))
        return 0
    return _run_guarded(go)


def _suite(args) -> int:
    from leanpremise.bench.harness import PAPER_SETTINGS, output_path
    from leanpremise.bench.results import format_summary, summarize
    from leanpremise.bench.suite import SuiteConfig, plan, run_suite

    lean, s = from_args(args, RunFlags, SuiteFlags)
    cfg = SuiteConfig(
        model=args.model, ntp_toolkit_path=lean.ntp_toolkit_path, split=s.split,
        retrieved_dir=s.retrieved_dir, decls_file=s.decls_file, premises_file=s.premises_file,
        results_root=s.results_root, date=lean.date, settings=tuple(s.settings or PAPER_SETTINGS),
        gt=s.gt, gt_only=s.gt_only, k=s.k, k_hammerCore=s.k_hammerCore,
        aesopHammerPriority=s.aesopHammerPriority, aesopPremisePriority=s.aesopPremisePriority,
        runner=_runner_kwargs(lean, s.max_workers))
    premises = cfg.premises_file or cfg.retrieved_dir / f"dot_{cfg.split}-{cfg.model}.json"
    if not cfg.gt_only and cfg.model.startswith("gt") and not premises.exists():
        # Once a name starting with "gt" meant ground truth; say so rather than fail on a missing file.
        print(f"error: {premises}: no such file; for ground-truth runs pass --gt_only "
              "(a model name no longer selects them)", file=sys.stderr)
        return 2
    if s.dry_run:
        for run in plan(cfg):
            flags = f"--k {run.k}" + "".join(
                f" --{name} {getattr(run, name)}" for name in ("k_hammerCore", "aesopHammerPriority",
                                                               "aesopPremisePriority")
                if getattr(run, name) is not None)
            print(f"{run.setting} {run.premises_file or '(ground truth)'} {flags} -> {output_path(run)}")
        return 0

    def go() -> int:
        reports = run_suite(cfg)
        for report in reports:
            _print_report(report)
        print()
        print(format_summary(summarize([r.out_file for r in reports])))
        return 0
    return _run_guarded(go)


def _results(args) -> int:
    from leanpremise.atomic import atomic_write_bytes
    from leanpremise.bench.premises_dir import BenchInputError
    from leanpremise.bench.results import format_summary, plot_summary, summarize

    flags = from_args(args, ResultsFlags)
    try:
        summary = summarize(args.files)
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary, verbose=flags.verbose))
    if flags.json is not None:
        atomic_write_bytes(flags.json, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False).encode())
    if flags.plot is not None:
        plot_summary(summary, flags.plot)
        print(f"plot written to {flags.plot}")
    return 0
