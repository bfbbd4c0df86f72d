"""Whether a cached embedding row may be used: finite, the model's dimension, unit norm.

Every cache the server reads vectors from (the in-memory LRU, the LMDB file, Redis) holds rows someone
else could have written: a NaN row makes a goal's scores NaN (answered as `"score": null` or `[]`), a zero
row scores every premise 0.0. The embedders all return L2-normalised rows (model/backends.py), so a row
whose norm is not 1 within `NORM_TOLERANCE` was not written by one of them. A rejected row is a miss: the
text is embedded again.
"""

from __future__ import annotations

import numpy as np

NORM_TOLERANCE = 1e-3
"""How far from 1 a row's L2 norm may be: float32 rounding of a normalised row is far below it, a
deliberately scaled or zeroed row far above."""


def wrong_dim(row: np.ndarray, dim: int | None) -> bool:
    """Whether `row` is not one vector of the model's dimension (`dim`; None: any)."""
    return row.ndim != 1 or (dim is not None and row.shape[0] != dim)


def row_problem(row: np.ndarray, dim: int | None) -> str | None:
    """Why `row` is not a usable embedding ("dim", "nonfinite", "norm"), or None when it is."""
    if wrong_dim(row, dim):
        return "dim"
    if not np.isfinite(row).all():
        return "nonfinite"
    norm = float(np.sqrt(np.dot(row.astype(np.float64), row.astype(np.float64))))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return "norm"
    return None


def stacked_problems(rows: np.ndarray) -> list[tuple[int, str]]:
    """(position, why) of each unusable row of a (n, dim) stack, as `row_problem` judges one row, in a few
    array operations instead of several per row: a request's cached rows are checked together."""
    finite = np.isfinite(rows).all(axis=1)
    wide = rows.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    bad = np.flatnonzero(~finite | (np.abs(norms - 1.0) > NORM_TOLERANCE))
    return [(int(i), "nonfinite" if not finite[i] else "norm") for i in bad]
