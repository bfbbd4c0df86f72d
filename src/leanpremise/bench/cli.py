"""`leanpremise bench tactic|suite|results`: LeanHammer's tactic benchmark and its summary."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    bench = sub.add_parser("bench", help="LeanHammer tactic benchmark: run it and summarise results")
    bsub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)

    tactic = bsub.add_parser("tactic", help="run one setting of the tactic benchmark over a decls file")
    _add_common_run_args(tactic)
    tactic.add_argument("--decl_names_file", "--decls_file", dest="decls_file", type=Path, required=True,
                        help="<split>_decls.json written by `leanpremise eval export-decls`")
    tactic.add_argument("--premises_file", type=Path, default=None,
                        help="dot_<split>-<model>.json of retrieved premises (default: ground-truth premises)")
    tactic.add_argument("--benchmark_type", "--setting", dest="setting", default="simp_all_with_premises",
                        help="tactic_benchmark setting, e.g. aesop_with_premises, hammerCore_nosimp, "
                             "aesop_hammerCore_nosimp, aesop_hammerCore_nosimp_with_premises "
                             "(any other name is passed through)")
    tactic.add_argument("--k", type=int, default=8, help="number of top premises to give (default 8)")
    tactic.add_argument("--k_hammerCore", type=int, default=None,
                        help="premises for hammerCore in the full setting (--hammerCoreK; default: k)")
    tactic.add_argument("--aesopHammerPriority", type=int, default=None)
    tactic.add_argument("--aesopPremisePriority", type=int, default=None)
    tactic.add_argument("--pred_simp_all_hint", action="store_true",
                        help="use predicted (or ground-truth) simp_all hints instead of notInSimpAll")
    tactic.add_argument("--rerank", action="store_true", help="rank retrieved premises by rerank_score")
    tactic.add_argument("--out_dir", type=Path, default=None,
                        help="default: results_<date>-<split>/<model>/ in the working directory")
    tactic.add_argument("--tag_suffix", default=None, help="suffix of the results file name")
    tactic.add_argument("--max_workers", type=int, default=8, help="parallel Lean runs (default 8)")
    tactic.set_defaults(func=_tactic)

    suite = bsub.add_parser("suite", help="the paper's four settings for one model (and the gt runs)")
    _add_common_run_args(suite)
    suite.add_argument("model", help="model name as in retrieved_premises/dot_<split>-<model>.json "
                                     "(with --gt_only: the name of the results folder, e.g. gt)")
    suite.add_argument("--split", default="test", choices=["valid", "test"])
    suite.add_argument("--retrieved_dir", type=Path, default=Path("retrieved_premises"))
    suite.add_argument("--decl_names_file", "--decls_file", dest="decls_file", type=Path, default=None,
                       help="default: <retrieved_dir>/<split>_decls.json")
    suite.add_argument("--premises_file", type=Path, default=None,
                       help="default: <retrieved_dir>/dot_<split>-<model>.json")
    suite.add_argument("--results_root", type=Path, default=Path("."),
                       help="where results_<date>-<split>/<model>/ goes (default: working directory)")
    suite.add_argument("--settings", nargs="+", default=None,
                       help="settings to run (default: the paper's four; the original also ran `duper`)")
    suite.add_argument("--gt", action="store_true", help="also run the settings on ground-truth premises")
    suite.add_argument("--gt_only", action="store_true",
                       help="run only the settings on ground-truth premises, results under <model>/ "
                            "(a model name is never taken to mean ground truth)")
    suite.add_argument("--k", type=int, default=32)
    suite.add_argument("--k_hammerCore", type=int, default=16)
    suite.add_argument("--aesopHammerPriority", type=int, default=10)
    suite.add_argument("--aesopPremisePriority", type=int, default=20)
    suite.add_argument("--max_workers", type=int, default=16, help="parallel Lean runs (default 16)")
    suite.add_argument("--dry_run", action="store_true", help="print the planned runs and exit")
    suite.set_defaults(func=_suite)

    results = bsub.add_parser("results", help="summarise results files: outcomes, gains/losses, cumulative")
    results.add_argument("files", nargs="+", type=Path, help="results JSON files, compared in this order")
    results.add_argument("--verbose", dest="list_changes", action="store_true",
                         help="list every gained (+) and lost (-) theorem")
    results.add_argument("--plot", type=Path, default=None, help="write the stacked bar chart here (e.g. out.png)")
    results.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    results.set_defaults(func=_results)


def _add_common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ntp_toolkit_path", type=Path, required=True,
                   help="ntp-toolkit checkout at the tacticBenchmark branch (where `lake` runs)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per theorem (default 300)")
    p.add_argument("--date", default=None, help="<date> in results_<date>-<split> (default: today, e.g. apr25)")
    p.add_argument("--resume", action="store_true", help="keep finished theorems of an earlier run")
    p.add_argument("--overwrite", action="store_true", help="start again even if results exist")
    p.add_argument("--skip_build", action="store_true", help="don't run `lake build tactic_benchmark` first")
    p.add_argument("--lake", default="lake", help="lake executable (default: `lake` on PATH)")
    p.add_argument("--scratch_dir", type=Path, default=None, help="parent of the temporary premises directory")
    p.add_argument("--print_results", dest="print_each", action="store_true", help="print each outcome")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _runner_kwargs(args) -> dict:
    return {"timeout": args.timeout, "resume": args.resume, "overwrite": args.overwrite,
            "skip_build": args.skip_build, "lake": args.lake, "scratch_dir": args.scratch_dir,
            "verbose": args.print_each, "progress": not args.no_progress, "max_workers": args.max_workers}


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

    cfg = TacticBenchConfig(
        ntp_toolkit_path=args.ntp_toolkit_path, decls_file=args.decls_file, premises_file=args.premises_file,
        setting=args.setting, k=args.k, k_hammerCore=args.k_hammerCore,
        aesopHammerPriority=args.aesopHammerPriority, aesopPremisePriority=args.aesopPremisePriority,
        pred_simp_all_hint=args.pred_simp_all_hint, rerank=args.rerank, out_dir=args.out_dir,
        tag_suffix=args.tag_suffix, date=args.date, **_runner_kwargs(args))

    def go() -> int:
        _print_report(run_tactic_benchmark(cfg))
        return 0
    return _run_guarded(go)


def _suite(args) -> int:
    from leanpremise.bench.harness import PAPER_SETTINGS, output_path
    from leanpremise.bench.results import format_summary, summarize
    from leanpremise.bench.suite import SuiteConfig, plan, run_suite

    cfg = SuiteConfig(
        model=args.model, ntp_toolkit_path=args.ntp_toolkit_path, split=args.split,
        retrieved_dir=args.retrieved_dir, decls_file=args.decls_file, premises_file=args.premises_file,
        results_root=args.results_root, date=args.date, settings=tuple(args.settings or PAPER_SETTINGS),
        gt=args.gt, gt_only=args.gt_only, k=args.k, k_hammerCore=args.k_hammerCore,
        aesopHammerPriority=args.aesopHammerPriority, aesopPremisePriority=args.aesopPremisePriority,
        runner=_runner_kwargs(args))
    premises = cfg.premises_file or cfg.retrieved_dir / f"dot_{cfg.split}-{cfg.model}.json"
    if not cfg.gt_only and cfg.model.startswith("gt") and not premises.exists():
        # Once a name starting with "gt" meant ground truth; say so rather than fail on a missing file.
        print(f"error: {premises}: no such file; for ground-truth runs pass --gt_only "
              "(a model name no longer selects them)", file=sys.stderr)
        return 2
    if args.dry_run:
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

    try:
        summary = summarize(args.files)
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary, verbose=args.list_changes))
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False).encode())
    if args.plot is not None:
        plot_summary(summary, args.plot)
        print(f"plot written to {args.plot}")
    return 0
