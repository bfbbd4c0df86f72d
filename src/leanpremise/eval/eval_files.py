"""Score any retrieved-premises files (ours, baselines, other tools) against a decls file.

Each file's entries are matched to the decls file by `decl_name`, premises are
ordered by score, names are mapped to integers, and the same vectorised
metrics as the evaluator are applied, so a file and the run that wrote it agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanpremise.eval.metrics import f1_at, hit_matrix, per_state_metrics
from leanpremise.eval.retrieved_files import RetrievedFileError, ranked_names, read_json_list

logger = logging.getLogger(__name__)


@dataclass
class FileRanking:
    """A retrieved file as integer rankings aligned with its ground truth."""

    path: Path
    label: str
    ranked: np.ndarray  # (B, depth) int64, -1 padded
    positives: list[np.ndarray]
    missing: int  # entries whose decl is not in the decls file (skipped)


def load_decls(path: Path) -> dict[str, list[str]]:
    decls = read_json_list(Path(path), "decls")
    out = {}
    for i, d in enumerate(decls):
        gt = d.get("gt_premises")
        if not isinstance(gt, list):
            raise RetrievedFileError(f"{path}: entry {i} ({d['decl_name']}) has no 'gt_premises' list")
        out[d["decl_name"]] = [str(n) for n in gt]
    return out


def file_label(path: Path) -> str:
    """`dot_test-bm25.json` -> `bm25`; other names -> the file stem."""
    stem = Path(path).stem
    if stem.startswith("dot_") and "-" in stem:
        return stem.split("-", 1)[1]
    return stem


def load_ranking(path: Path, gt: dict[str, list[str]]) -> FileRanking:
    entries = read_json_list(Path(path), "retrieved-premises")
    vocab: dict[str, int] = {}
    rows, positives, missing = [], [], 0
    for i, entry in enumerate(entries):
        name = entry["decl_name"]
        if name not in gt:
            missing += 1
            continue
        names = ranked_names(entry, Path(path), i)
        rows.append([vocab.setdefault(n, len(vocab)) for n in names])
        positives.append(np.asarray([vocab.setdefault(n, len(vocab)) for n in gt[name]], dtype=np.int64))
    if missing:
        logger.warning("%s: %d of %d entries name declarations not in the decls file (skipped)",
                       path, missing, len(entries))
    depth = max((len(r) for r in rows), default=0)
    ranked = np.full((len(rows), depth), -1, dtype=np.int64)
    for r, ids in enumerate(rows):
        ranked[r, : len(ids)] = ids
    return FileRanking(Path(path), file_label(path), ranked, positives, missing)


def file_metrics(fr: FileRanking, k_list=(16, 32), recall_without_positives: str = "skip") -> dict[str, float]:
    """Recall/Precision/F1/FullRecall@k for one file.

    `recall_without_positives`: "skip" averages Recall over states with positives (the
    evaluator's convention); "one" counts such states as recall 1 (the original's
    eval_recall_at_k script).
    """
    hits, n_pos = hit_matrix(fr.ranked, fr.positives)
    per = per_state_metrics(hits, n_pos, list(k_list), [])
    has_pos = n_pos > 0
    out: dict[str, float] = {"states": float(len(n_pos)), "missing": float(fr.missing)}
    for k in k_list:
        recall = per[f"recall@{k}"]
        if recall_without_positives == "one":
            out[f"recall@{k}"] = float(np.where(has_pos, recall, 1.0).mean()) if len(recall) else 0.0
        else:
            out[f"recall@{k}"] = float(recall[has_pos].mean()) if has_pos.any() else 0.0
        out[f"precision@{k}"] = float(per[f"precision@{k}"].mean()) if len(n_pos) else 0.0
        out[f"f1@{k}"] = float(f1_at(fr.ranked, fr.positives, k).mean()) if len(n_pos) else 0.0
        out[f"fullrecall@{k}"] = float(per[f"fullrecall@{k}"].mean()) if len(n_pos) else 0.0
    return out


def recall_curve(fr: FileRanking, ks: np.ndarray) -> np.ndarray:
    """Recall@k over states with positives, for each k in `ks`."""
    hits, n_pos = hit_matrix(fr.ranked, fr.positives)
    has_pos = n_pos > 0
    if not has_pos.any() or hits.shape[1] == 0:
        return np.zeros(len(ks))
    cum = np.cumsum(hits[has_pos], axis=1)
    at = cum[:, np.minimum(ks, hits.shape[1]) - 1]
    return (at / n_pos[has_pos][:, None]).mean(axis=0)


def plot_recall(rankings: list[FileRanking], out: Path) -> Path:
    """Recall@k curves of all files on one chart, k on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = max((fr.ranked.shape[1] for fr in rankings), default=1)
    ks = np.unique(np.geomspace(1, max(depth, 1), num=64).round().astype(np.int64))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fr in rankings:
        ax.plot(ks, 100 * recall_curve(fr, ks), label=fr.label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k (%)")
    ax.set_title("Recall@k of retrieved premises")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


def format_rows(rows: list[tuple[str, dict[str, float]]], k_list) -> str:
    cols = [f"{m}@{k}" for k in k_list for m in ("recall", "precision", "f1", "fullrecall")]
    width = max([len("file")] + [len(label) for label, _ in rows])
    lines = [f"{'file':<{width}}  {'states':>6}  " + "  ".join(f"{c:>13}" for c in cols)]
    for label, m in rows:
        lines.append(f"{label:<{width}}  {int(m['states']):>6}  " + "  ".join(f"{100 * m[c]:>12.2f}%" for c in cols))
    return "\n".join(lines)
