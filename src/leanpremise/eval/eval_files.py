"""Score any retrieved-premises files (ours, baselines, other tools) against a decls file.

Each file's entries are matched to the decls file by `decl_name`, premises are
taken in file order (the ranking Lean reads; `retrieved_files` warns when a
file's scores disagree with it), names are mapped to integers, and the same
vectorised metrics as the evaluator are applied, so a file and the run that
wrote it agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from leanpremise.eval.decls import read_decls
from leanpremise.eval.metrics import f1_at, hit_matrix, per_state_metrics
from leanpremise.eval.retrieved_files import RetrievedFileError, read_retrieved

logger = logging.getLogger(__name__)

USAGE_ORDER = "eval-files takes the decls file first: eval-files <split>_decls.json dot_<split>-<model>.json ..."


@dataclass
class FileRanking:
    """A retrieved file as integer rankings aligned with its ground truth."""

    path: Path
    label: str
    ranked: np.ndarray  # (B, depth) int64, -1 padded
    positives: list[np.ndarray]
    missing: int  # entries whose decl is not in the decls file (skipped)


def _first_entry_keys(path: Path) -> set[str]:
    """Keys of the file's first entry (empty if it is not a JSON list of objects): to spot swapped arguments."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return set()
    return set(data[0]) if isinstance(data, list) and data and isinstance(data[0], dict) else set()


def load_decls(path: Path) -> dict[str, list[str]]:
    """decl name -> ground-truth premise names."""
    try:
        decls = read_decls(path, RetrievedFileError)
    except RetrievedFileError as e:
        if "premises" in _first_entry_keys(path):
            raise RetrievedFileError(f"{path}: this is a retrieved-premises file, not a decls file. {USAGE_ORDER}"
                                     ) from None
        raise e from None
    out = {}
    for i, d in enumerate(decls):
        if d.gt_premises is None:
            if d.model_extra and "premises" in d.model_extra:
                raise RetrievedFileError(f"{path}: this is a retrieved-premises file, not a decls file. "
                                         f"{USAGE_ORDER}")
            raise RetrievedFileError(f'{path}: entry {i} ("{d.decl_name}"): field "gt_premises": missing')
        out[d.decl_name] = d.gt_premises
    return out


def file_label(path: Path) -> str:
    """`dot_test-bm25.json` -> `bm25`; other names -> the file stem."""
    stem = Path(path).stem
    if stem.startswith("dot_") and "-" in stem:
        return stem.split("-", 1)[1]
    return stem


def load_ranking(path: Path, gt: dict[str, list[str]]) -> FileRanking:
    try:
        entries = read_retrieved(path)
    except RetrievedFileError as e:
        keys = _first_entry_keys(path)
        if "gt_premises" in keys and "premises" not in keys:
            raise RetrievedFileError(f"{path}: this is a decls file, not a retrieved-premises file. {USAGE_ORDER}"
                                     ) from None
        raise e from None
    vocab: dict[str, int] = {}
    rows, positives, missing = [], [], 0
    for entry in entries:
        if entry.decl_name not in gt:
            missing += 1
            continue
        rows.append([vocab.setdefault(n, len(vocab)) for n in entry.ranked_names()])
        positives.append(np.asarray([vocab.setdefault(n, len(vocab)) for n in gt[entry.decl_name]], dtype=np.int64))
    if missing:
        logger.warning("%s: %d of %d entries name declarations not in the decls file (skipped)",
                       path, missing, len(entries))
    depth = max((len(r) for r in rows), default=0)
    ranked = np.full((len(rows), depth), -1, dtype=np.int64)
    for r, ids in enumerate(rows):
        ranked[r, : len(ids)] = ids
    return FileRanking(Path(path), file_label(path), ranked, positives, missing)


def file_metrics(fr: FileRanking, k_list=(16, 32), recall_without_positives: str = "skip") -> dict[str, float]:
    """Recall/Precision/F1/FullRecall/MRR@k for one file.

    `recall_without_positives`: "skip" averages Recall over states with positives (the
    evaluator's convention); "one" counts such states as recall 1 (the original's
    eval_recall_at_k script). The other metrics average over all states, as the evaluator's do.
    """
    hits, n_pos = hit_matrix(fr.ranked, fr.positives)
    per = per_state_metrics(hits, n_pos, list(k_list), list(k_list))
    has_pos = n_pos > 0
    out: dict[str, float] = {"states": float(len(n_pos)), "states_with_positives": float(has_pos.sum()),
                             "missing": float(fr.missing)}
    for k in k_list:
        recall = per[f"recall@{k}"]
        if recall_without_positives == "one":
            out[f"recall@{k}"] = float(np.where(has_pos, recall, 1.0).mean()) if len(recall) else 0.0
        else:
            out[f"recall@{k}"] = float(recall[has_pos].mean()) if has_pos.any() else 0.0
        out[f"precision@{k}"] = float(per[f"precision@{k}"].mean()) if len(n_pos) else 0.0
        out[f"f1@{k}"] = float(f1_at(fr.ranked, fr.positives, k).mean()) if len(n_pos) else 0.0
        out[f"fullrecall@{k}"] = float(per[f"fullrecall@{k}"].mean()) if len(n_pos) else 0.0
        out[f"mrr@{k}"] = float(per[f"mrr@{k}"].mean()) if len(n_pos) else 0.0
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


LINESTYLES = ("-", "--", ":", "-.")


def curve_style(i: int, n_colors: int = 10) -> dict[str, str]:
    """Colour and line style of curve i: ten colours, then the same colours dashed, dotted, ... so that no
    two of the first 40 curves look alike."""
    return {"color": f"C{i % n_colors}", "linestyle": LINESTYLES[(i // n_colors) % len(LINESTYLES)]}


def plot_recall(rankings: list[FileRanking], out: Path) -> Path:
    """Recall@k curves of all files on one chart, k on a log axis, the legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = max((fr.ranked.shape[1] for fr in rankings), default=1)
    ks = np.unique(np.geomspace(1, max(depth, 1), num=64).round().astype(np.int64))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, fr in enumerate(rankings):
        ax.plot(ks, 100 * recall_curve(fr, ks), label=fr.label, **curve_style(i))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k (%), states with positives")
    ax.set_title("Recall@k of retrieved premises")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")  # "tight" widens the image to hold the outside legend
    plt.close(fig)
    tmp.replace(out)
    return out


def format_rows(rows: list[tuple[str, dict[str, float]]], k_list, recall_without_positives: str = "skip") -> str:
    """The table, then a line saying which states each metric averages over."""
    cols = [f"{m}@{k}" for k in k_list for m in ("recall", "precision", "f1", "fullrecall", "mrr")]
    width = max([len("file")] + [len(label) for label, _ in rows])
    lines = [f"{'file':<{width}}  {'states':>6}  {'w/ pos':>6}  " + "  ".join(f"{c:>13}" for c in cols)]
    for label, m in rows:
        cells = [f"{m[c]:>13.4f}" if c.startswith("mrr") else f"{100 * m[c]:>12.2f}%" for c in cols]
        lines.append(f"{label:<{width}}  {int(m['states']):>6}  {int(m['states_with_positives']):>6}  "
                     + "  ".join(cells))
    recall_over = ("the states with positives (w/ pos)" if recall_without_positives == "skip"
                   else "all states, those without positives counting as 1")
    lines.append(f"Recall averages over {recall_over}; Precision, F1, FullRecall and MRR over all states "
                 "(a state without positives has FullRecall 1, Precision and MRR 0).")
    return "\n".join(lines)
