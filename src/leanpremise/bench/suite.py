"""`leanpremise bench suite`: the paper's benchmark runs for one model, as the original .sh ran them.

For a retrieval model: aesop (`aesop_with_premises`, k=32), auto (`hammerCore_nosimp`, k=16), aesop+auto
(`aesop_hammerCore_nosimp`, k=16) and full (`aesop_hammerCore_nosimp_with_premises`, k=32,
k_hammerCore=16, hammer priority 10, premise priority 20), on `retrieved_premises/dot_<split>-<model>.json`.
Ground-truth runs (`--gt` besides the model's runs, `--gt_only` instead of them; never guessed from the
model's name, so `gte-small` uses its own premises) run the same settings on the decls file's
ground-truth premises with the harness defaults, as the original did. `duper` (run by the original .sh
at k=16 too) and other settings can be added with `--settings`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from leanpremise.bench.harness import (
    PAPER_SETTINGS,
    RunReport,
    TacticBenchConfig,
    run_tactic_benchmark,
    today_tag,
)

log = logging.getLogger(__name__)

_HAMMER_K_SETTINGS = ("hammerCore_nosimp", "aesop_hammerCore_nosimp", "duper")
"""Settings the original ran with k = k_hammerCore (the premises go to the hammer, not aesop)."""
FULL_SETTING = "aesop_hammerCore_nosimp_with_premises"


@dataclass
class SuiteConfig:
    model: str
    ntp_toolkit_path: Path
    split: str = "test"
    retrieved_dir: Path = Path("retrieved_premises")
    decls_file: Path | None = None  # default <retrieved_dir>/<split>_decls.json
    premises_file: Path | None = None  # default <retrieved_dir>/dot_<split>-<model>.json
    results_root: Path = Path(".")
    date: str | None = None
    settings: tuple[str, ...] = PAPER_SETTINGS
    gt: bool = False
    """Also run the settings on the ground-truth premises (results under `gt/`)."""
    gt_only: bool = False
    """Only the ground-truth runs, their results under `<model>/` (the original's `gt...` model names)."""
    k: int = 32
    k_hammerCore: int = 16
    aesopHammerPriority: int = 10
    aesopPremisePriority: int = 20
    gt_k: int = 8  # the harness's default k, which the original's ground-truth runs used
    runner: dict = field(default_factory=dict)  # TacticBenchConfig fields shared by every run


def plan(cfg: SuiteConfig) -> list[TacticBenchConfig]:
    """The runs of the suite, in the original's order (model runs, then the ground-truth runs)."""
    decls = cfg.decls_file or cfg.retrieved_dir / f"{cfg.split}_decls.json"
    date = cfg.date or today_tag()
    runs: list[TacticBenchConfig] = []

    def base(**kw) -> TacticBenchConfig:
        return TacticBenchConfig(ntp_toolkit_path=cfg.ntp_toolkit_path, decls_file=decls, date=date,
                                 **{**cfg.runner, **kw})

    if not cfg.gt_only:
        premises = cfg.premises_file or cfg.retrieved_dir / f"dot_{cfg.split}-{cfg.model}.json"
        out_dir = cfg.results_root / f"results_{date}-{cfg.split}" / cfg.model
        for setting in cfg.settings:
            kw: dict = {"setting": setting, "premises_file": premises, "out_dir": out_dir, "k": cfg.k}
            if setting in _HAMMER_K_SETTINGS:
                kw["k"] = cfg.k_hammerCore
            elif setting == FULL_SETTING:
                kw.update(k_hammerCore=cfg.k_hammerCore, aesopHammerPriority=cfg.aesopHammerPriority,
                          aesopPremisePriority=cfg.aesopPremisePriority)
            runs.append(base(**kw))
    if cfg.gt or cfg.gt_only:
        gt_name = cfg.model if cfg.gt_only else "gt"
        out_dir = cfg.results_root / f"results_{date}-{cfg.split}" / gt_name
        for setting in cfg.settings:
            runs.append(base(setting=setting, premises_file=None, out_dir=out_dir, k=cfg.gt_k))
    return runs


def run_suite(cfg: SuiteConfig) -> list[RunReport]:
    """Run every planned setting; `lake build` happens once, before the first run that has work."""
    reports = []
    built = bool(cfg.runner.get("skip_build"))
    for run in plan(cfg):
        run = dataclasses.replace(run, skip_build=built)
        log.info("running %s", run.setting)
        report = run_tactic_benchmark(run)
        built = built or report.n_run > 0
        reports.append(report)
    return reports
