"""`leanpremise bench tactic`: run LeanHammer's tactic benchmark on every evaluation theorem.

Re-creates the original `tactic_benchmark.py`: write the premises directory, `lake build tactic_benchmark`
once, then `lake exe tactic_benchmark <module> <decl> <premises_dir> <setting> --k <k> [...]` per theorem in
parallel with a per-theorem timeout, and save `{decl_name: {decl_name, module, command, result_emoji,
result_output, ...}}`. Unlike the original, each result is appended to a journal as it arrives (so an
interrupted run loses nothing and `resume` skips finished theorems), a timeout ends only that run's
process group, and the temporary premises directory is always removed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes
from leanpremise.bench import outcomes
from leanpremise.bench.premises_dir import (
    BenchInputError,
    Selection,
    load_decls,
    select_premises,
    write_premises_dir,
)
from leanpremise.bench.processes import ProcessGroups, RunCancelled
from leanpremise.bench.results import RESULTS_FILE

log = logging.getLogger(__name__)

PAPER_SETTINGS = (
    "aesop_with_premises",  # aesop
    "hammerCore_nosimp",  # auto
    "aesop_hammerCore_nosimp",  # aesop+auto
    "aesop_hammerCore_nosimp_with_premises",  # full
)
NOISE_PREFIXES = ("note:", "warning:", "error:", "⚠", "✖", "✔")
"""Lines lake prints about building (not the benchmark's result); dropped from the output as the original did."""
_K_SETTINGS = ("hammer", "premise", "selector", "duper")
"""A setting whose name contains one of these uses the premises, so its file name records k."""


class BenchError(RuntimeError):
    """The benchmark cannot run (build failure, missing tool, results that would be overwritten)."""


@dataclass
class TacticBenchConfig:
    """One run of one setting over one decls file (the original script's arguments)."""

    ntp_toolkit_path: Path
    decls_file: Path
    premises_file: Path | None = None  # None: the ground-truth premises from the decls file
    setting: str = "simp_all_with_premises"
    k: int = 8
    k_hammerCore: int | None = None
    aesopHammerPriority: int | None = None
    aesopPremisePriority: int | None = None
    pred_simp_all_hint: bool = False
    rerank: bool = False
    max_workers: int = 8
    timeout: float = 300
    out_dir: Path | None = None  # None: results_<date>-<split>/<model>/ in the working directory
    tag_suffix: str | None = None
    date: str | None = None  # the <date> of the default out_dir (default: today, e.g. "apr25")
    resume: bool = False
    overwrite: bool = False
    skip_build: bool = False
    lake: str = "lake"
    scratch_dir: Path | None = None  # parent of the temporary premises directory (default: system temp)
    verbose: bool = False
    progress: bool = True


@dataclass
class RunReport:
    """What a run produced: the results file and the outcome counts over all its theorems."""

    out_file: Path
    counts: Counter = field(default_factory=Counter)
    n_run: int = 0
    n_resumed: int = 0
    n_without_premises: int = 0


def today_tag(today: dt.date | None = None) -> str:
    """The original's date tag: lower-case month abbreviation and day, e.g. `apr25`."""
    today = today or dt.date.today()
    return f"{today.strftime('%b').lower()}{today.day:02d}"


def default_out_dir(decls_file: Path, premises_file: Path | None, date: str | None = None) -> Path:
    """`results_<date>-<split>/<model>` from the names `<split>_decls.json` and `dot_<split>-<model>.json`."""
    split_match = re.match(r"^(.+?)_decls", Path(decls_file).name)
    if not split_match:
        raise BenchError(f"cannot tell the split from the decls file name {Path(decls_file).name!r} "
                         "(expected <split>_decls.json); pass --out_dir")
    split = split_match.group(1)
    if premises_file is None:
        model = "gt"
    else:
        model_match = re.match(r"^[^_]+_[^-]+-(.+)\.json$", Path(premises_file).name)
        if not model_match:
            raise BenchError(f"cannot tell the model from the premises file name {Path(premises_file).name!r} "
                             "(expected dot_<split>-<model>.json); pass --out_dir")
        model = model_match.group(1)
    return Path(f"results_{date or today_tag()}-{split}") / model


def output_name(cfg: TacticBenchConfig) -> str:
    """`<setting>[-gt|-k<k>][-rr][-psah][-hp<n>][-pp<n>][-khc<n>][-<tag>].json`, as the original named runs."""
    name = cfg.setting
    if cfg.premises_file is None:
        name += "-gt"
    elif any(part in cfg.setting for part in _K_SETTINGS):
        name += f"-k{cfg.k}"
    if cfg.rerank:
        name += "-rr"
    if cfg.pred_simp_all_hint:
        name += "-psah"
    if cfg.aesopHammerPriority is not None:
        name += f"-hp{cfg.aesopHammerPriority}"
    if cfg.aesopPremisePriority is not None:
        name += f"-pp{cfg.aesopPremisePriority}"
    if cfg.k_hammerCore is not None:
        name += f"-khc{cfg.k_hammerCore}"
    if cfg.tag_suffix:
        name += f"-{cfg.tag_suffix}"
    return name + ".json"


def output_path(cfg: TacticBenchConfig) -> Path:
    out_dir = cfg.out_dir if cfg.out_dir is not None else default_out_dir(cfg.decls_file, cfg.premises_file,
                                                                           cfg.date)
    return Path(out_dir) / output_name(cfg)


def journal_path(out_file: Path) -> Path:
    """Results of an unfinished run, one JSON line per theorem (not `*.json`, so globs skip it)."""
    return out_file.with_name(out_file.name + ".partial.jsonl")


def benchmark_command(cfg: TacticBenchConfig, module: str, decl_name: str, premises_dir: Path) -> list[str]:
    cmd = [cfg.lake, "exe", "tactic_benchmark", module, decl_name, str(Path(premises_dir).resolve()),
           cfg.setting, "--k", str(cfg.k)]
    if cfg.aesopHammerPriority is not None:
        cmd += ["--aesopHammerPriority", str(cfg.aesopHammerPriority)]
    if cfg.aesopPremisePriority is not None:
        cmd += ["--aesopPremisePriority", str(cfg.aesopPremisePriority)]
    if cfg.k_hammerCore is not None:
        cmd += ["--hammerCoreK", str(cfg.k_hammerCore)]
    return cmd


def clean_output(text: str) -> str:
    """Drop lake's build chatter so only the benchmark's own lines are parsed and kept."""
    return "\n".join(line for line in text.splitlines() if not line.startswith(NOISE_PREFIXES))


def resolve_lake(lake: str) -> str:
    found = shutil.which(lake)
    if found is None:
        raise BenchError(f"lake executable {lake!r} not found (on PATH or as a path); pass --lake")
    return found


def build_tactic_benchmark(cfg: TacticBenchConfig) -> None:
    """`lake build tactic_benchmark` once, so the per-theorem runs don't each trigger (and race on) a build."""
    log.info("building tactic_benchmark in %s", cfg.ntp_toolkit_path)
    proc = subprocess.run([cfg.lake, "build", "tactic_benchmark"], check=False, cwd=cfg.ntp_toolkit_path,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise BenchError(f"`lake build tactic_benchmark` failed in {cfg.ntp_toolkit_path} "
                         f"(exit {proc.returncode}):\n{tail}")


def run_theorem(cfg: TacticBenchConfig, groups: ProcessGroups, sel: Selection, premises_dir: Path) -> dict:
    """Benchmark one theorem; the entry has the original's fields plus `returncode` and `seconds`."""
    cmd = benchmark_command(cfg, sel.theorem.module, sel.theorem.decl_name, premises_dir)
    command = shlex.join(cmd)
    res = groups.run(cmd, str(cfg.ntp_toolkit_path), cfg.timeout)
    if res.timed_out:
        output = f"TimeoutExpired: Command '{command}' timed out after {cfg.timeout:g} seconds"
        emoji = outcomes.TIMEOUT
    else:
        output = clean_output(res.output)
        emoji = outcomes.outcome_from_output(output)
    return {"decl_name": sel.theorem.decl_name, "module": sel.theorem.module, "command": command,
            "result_emoji": emoji, "result_output": output, "returncode": res.returncode,
            "seconds": round(res.seconds, 3)}


def _read_previous(out_file: Path, journal: Path) -> dict[str, dict]:
    """Results of earlier attempts at this run: the last results file, then the journal (newer) on top."""
    previous: dict[str, dict] = {}
    if out_file.exists():
        try:
            data = json.loads(out_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BenchError(f"{out_file}: not valid JSON ({e}); move it away to rerun") from None
        if not isinstance(data, dict):
            raise BenchError(f"{out_file}: expected an object keyed by declaration name")
        previous.update({k: v for k, v in data.items() if isinstance(v, dict)})
    if journal.exists():
        lines = journal.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # the write an interruption cut short
                    log.warning("%s:%d: incomplete last line ignored", journal, n)
                    continue
                raise BenchError(f"{journal}:{n}: not valid JSON") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("decl_name"), str):
                raise BenchError(f"{journal}:{n}: expected an object with a 'decl_name'")
            previous[entry["decl_name"]] = entry
    return {k: v for k, v in previous.items() if v.get("command") and v.get("result_emoji")}


def _not_tested_entry(sel_module: str, decl_name: str, why: str) -> dict:
    return {"decl_name": decl_name, "module": sel_module, "command": "", "result_emoji": outcomes.NOT_TESTED,
            "result_output": why, "returncode": None, "seconds": 0.0}


class _interrupts_as_flag:
    """Ctrl-C and SIGTERM set a flag that the result loop checks, instead of raising wherever the main thread
    happens to be: an exception raised inside the futures' lock handling can leave a lock held, and the
    workers finishing their runs then block on it forever (seen once in CI: the interrupted run hung)."""

    def __enter__(self) -> threading.Event:
        self.flag = threading.Event()
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda signum, frame: self.flag.set())
        return self.flag

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _checked_config(cfg: TacticBenchConfig) -> TacticBenchConfig:
    """Fail before any work if the checkout or lake is missing; `lake` resolved to its full path."""
    if not Path(cfg.ntp_toolkit_path).is_dir():
        raise BenchError(f"ntp-toolkit checkout not found: {cfg.ntp_toolkit_path}")
    cfg = dataclasses.replace(cfg, lake=resolve_lake(cfg.lake))
    if cfg.scratch_dir is not None:
        Path(cfg.scratch_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def _previous_results(cfg: TacticBenchConfig, out_file: Path, journal: Path) -> dict[str, dict]:
    """What earlier attempts left, honouring resume/overwrite: existing results are never silently replaced."""
    if (out_file.exists() or journal.exists()) and not (cfg.resume or cfg.overwrite):
        raise BenchError(f"results for this run already exist ({out_file if out_file.exists() else journal}); "
                         "pass --resume to finish it or --overwrite to start again")
    if cfg.overwrite and not cfg.resume:
        journal.unlink(missing_ok=True)
    return _read_previous(out_file, journal) if cfg.resume else {}


def _append_to_journal(jf, entry: dict) -> None:
    """One result line, flushed to disk before the next is taken, so an interruption loses none."""
    jf.write(json.dumps(entry, ensure_ascii=False) + "\n")
    jf.flush()
    os.fsync(jf.fileno())


def _collect_results(cfg: TacticBenchConfig, pending: set, jf, bar, new: dict[str, dict]) -> None:
    """Journal each theorem's result as it finishes; a Ctrl-C / SIGTERM is raised here, between results."""
    solved = 0
    with _interrupts_as_flag() as interrupted:
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.2,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                entry = fut.result()
                _append_to_journal(jf, entry)
                new[entry["decl_name"]] = entry
                solved += outcomes.is_solved(entry["result_emoji"])
                bar.set_postfix(solved=solved, refresh=False)
                bar.update()
                if cfg.verbose:
                    bar.write(f"{entry['result_emoji']} {entry['decl_name']} ({entry['seconds']:.1f}s)")
            if interrupted.is_set():
                raise KeyboardInterrupt()


def _run_theorems(cfg: TacticBenchConfig, selections: list[Selection], todo: list[Selection], out_file: Path,
                  n_previous: int) -> dict[str, dict]:
    """Run `todo` in parallel against a temporary premises dir; on any failure, end every Lean run first."""
    from tqdm import tqdm

    journal = journal_path(out_file)
    new: dict[str, dict] = {}
    groups = ProcessGroups()
    with tempfile.TemporaryDirectory(prefix="leanpremise-premises-", dir=cfg.scratch_dir) as tmp:
        premises_dir = Path(tmp)
        write_premises_dir(premises_dir, selections)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, cfg.max_workers))
        try:
            with open(journal, "a", encoding="utf-8") as jf, \
                    tqdm(total=len(todo), desc=out_file.name, unit="thm", disable=not cfg.progress) as bar:
                pending = {pool.submit(run_theorem, cfg, groups, s, premises_dir) for s in todo}
                _collect_results(cfg, pending, jf, bar, new)
        except BaseException:
            groups.kill_all()  # Ctrl-C or a failure: end every running Lean process group now
            pool.shutdown(wait=True, cancel_futures=True)
            if new or n_previous:
                log.warning("interrupted: %d results kept in %s; rerun with --resume to finish",
                            len(new) + n_previous, journal)
            raise
        pool.shutdown(wait=True)
    return new


def _final_results(theorems, new: dict[str, dict], previous: dict[str, dict]) -> dict[str, dict]:
    """Every theorem of the decls file, in its order: this run's result, else an earlier one, else not tested."""
    final: dict[str, dict] = {}
    for t in theorems:
        name = t.decl_name
        if name in new or name in previous:
            final[name] = new.get(name) or previous[name]
        else:
            final[name] = _not_tested_entry(t.module, name, "no retrieved premises for this declaration")
    return final


def run_tactic_benchmark(cfg: TacticBenchConfig) -> RunReport:
    """Run (or finish, with `resume`) one setting; returns where the results were written."""
    cfg = _checked_config(cfg)
    out_file = output_path(cfg)
    journal = journal_path(out_file)
    previous = _previous_results(cfg, out_file, journal)

    theorems = load_decls(cfg.decls_file, need_ground_truth=cfg.premises_file is None)
    selections, missing = select_premises(theorems, cfg.premises_file, cfg.k, cfg.rerank, cfg.pred_simp_all_hint)
    todo = [s for s in selections if s.theorem.decl_name not in previous]
    report = RunReport(out_file, n_resumed=len(selections) - len(todo), n_without_premises=len(missing))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.skip_build and todo:
        build_tactic_benchmark(cfg)

    new = _run_theorems(cfg, selections, todo, out_file, len(previous))
    final = _final_results(theorems, new, previous)
    RESULTS_FILE.validate_python(final)  # the writer keeps to the schema `bench results` reads with
    atomic_write_bytes(out_file, json.dumps(final, indent=4, ensure_ascii=False).encode("utf-8"))
    journal.unlink(missing_ok=True)
    report.n_run = len(new)
    report.counts = Counter(outcomes.outcome_of_entry(e) for e in final.values())
    return report


__all__ = [
    "PAPER_SETTINGS",
    "BenchError",
    "BenchInputError",
    "RunCancelled",
    "RunReport",
    "TacticBenchConfig",
    "benchmark_command",
    "default_out_dir",
    "output_name",
    "output_path",
    "run_tactic_benchmark",
    "today_tag",
]
