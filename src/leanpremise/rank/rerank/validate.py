"""A reranker's model file checked before its library sees it: trees that cannot hang or crash the process.

LightGBM and XGBoost trust their model files: a tree whose node is its own child loops for ever in
`predict`, a child or feature index out of range reads outside its arrays (SIGSEGV), and LightGBM's
`tree_sizes` header, when it disagrees with the trees, aborts the process. A bundle's model file is as
trustworthy as whoever wrote the bundle (its manifest is written by the same hand), so before a model is
built from it, every tree is checked here: its node arrays have their stated lengths, its child indices are
in range and form one tree from the root (no node reached twice, none unreached), its split features are
below the model's feature count, its categorical splits point into their tables, and the tree count and each
tree's leaves are within `ModelLimits`. The checked bytes are what the library then loads (never the path).

LightGBM's text format is read here only as far as these checks need (it is documented: a header of
`key=value` lines, then one `Tree=i` block per tree, then `end of trees`); the sections after the trees
(importances, training parameters) are not needed to predict and are not handed on. Numbers the checks rest
on are read strictly (digits only), so no number is read one way here and another way by the library.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from leanpremise.rank.rerank.spec import RerankerFileError


@dataclass(frozen=True)
class ModelLimits:
    """The largest model a reranker may be; the defaults are the hard limits, which a server's settings
    (MAX_RERANK_TREES, MAX_RERANK_LEAVES) lower (docs/decisions.md)."""

    max_trees: int = 100_000
    max_leaves: int = 131_072


HARD_LIMITS = ModelLimits()


_INT = re.compile(r"-?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z|[-+]?inf\Z|nan\Z", re.IGNORECASE)
_KEY = re.compile(r"[a-z_]+\Z")
_HEADER_KEYS = {"version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
                "average_output", "feature_names", "monotone_constraints", "feature_infos", "tree_sizes",
                "parser_config_str"}
_TREE_KEYS = {"num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type", "left_child",
              "right_child", "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight",
              "internal_count", "cat_boundaries", "cat_threshold", "is_linear", "shrinkage"}
_END = "end of trees"


class _Bad(ValueError):
    """One problem of a model file, as a phrase; the caller names the file."""


def lightgbm_model_str(data: bytes, path: Path, n_features: int, limits: ModelLimits) -> str:
    """The model string LightGBM is given for the file `path` holding `data`: its header and trees, each
    checked; RerankerFileError (one line naming the file and the tree) otherwise."""
    try:
        return _lightgbm(data, n_features, limits)
    except _Bad as e:
        raise RerankerFileError(f"{path}: not a readable lightgbm model ({e})") from None


def xgboost_model_bytes(data: bytes, path: Path, n_features: int, limits: ModelLimits) -> bytearray:
    """The bytes XGBoost is given for the JSON model `path` holding `data`, after the same checks."""
    try:
        _xgboost(data, n_features, limits)
    except _Bad as e:
        raise RerankerFileError(f"{path}: not a readable xgboost model ({e})") from None
    return bytearray(data)


# ---- LightGBM ------------------------------------------------------------------------------------------


def _lightgbm(data: bytes, n_features: int, limits: ModelLimits) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad(f"not UTF-8 text at byte {e.start}") from None
    if "\r" in text or "\0" in text:
        raise _Bad("carriage returns or NUL bytes in the text")
    first = text.find("\nTree=")
    end = text.find(f"\n{_END}\n")
    if first < 0 or end < 0 or end < first:
        raise _Bad(f'no "Tree=" blocks ended by "{_END}" (truncated?)')
    header = _key_values(text[:first].split("\n"), "the header", _HEADER_KEYS, first_line="tree")
    _check_header(header, n_features)
    sizes = _ints(header.get("tree_sizes", ""), "tree_sizes")
    if not sizes:
        raise _Bad('header key "tree_sizes" missing or empty')
    if len(sizes) > limits.max_trees:
        raise _Bad(f"{len(sizes)} trees, more than the limit of {limits.max_trees}")
    raw = text[first + 1:end + 1].encode("utf-8")
    if sum(sizes) != len(raw) or min(sizes) <= 0:
        raise _Bad(f'"tree_sizes" adds up to {sum(sizes)} bytes, the trees take {len(raw)}')
    offset = 0
    for i, size in enumerate(sizes):
        try:
            block = raw[offset:offset + size].decode("utf-8")
        except UnicodeDecodeError:
            block = ""
        offset += size
        lines = block.split("\n")
        if lines[0] != f"Tree={i}" or not block.endswith("\n"):
            raise _Bad(f'"tree_sizes" entry {i} does not span tree {i} (it starts {lines[0][:20]!r})')
        _check_lightgbm_tree(_key_values([ln for ln in lines[1:] if ln], f"tree {i}", _TREE_KEYS), i,
                             n_features, limits)
    return text[:end + 1 + len(_END) + 1]


def _key_values(lines: list[str], where: str, known: set[str], first_line: str | None = None) -> dict[str, str]:
    """`key=value` lines, each key known and once (a repeated key could be read one way here, another there)."""
    if first_line is not None:
        if not lines or lines[0] != first_line:
            raise _Bad(f'does not start with "{first_line}"')
        lines = lines[1:]
    out: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq or not _KEY.match(key):
            raise _Bad(f"{where}: a line that is not key=value ({line[:40]!r})")
        if key not in known:
            raise _Bad(f"{where}: unknown key {key!r}")
        if key in out:
            raise _Bad(f"{where}: key {key!r} given twice")
        out[key] = value
    return out


def _check_header(header: dict[str, str], n_features: int) -> None:
    if header.get("version") not in ("v3", "v4"):
        raise _Bad(f'header "version" {header.get("version")!r}, expected v3 or v4')
    for key in ("num_class", "num_tree_per_iteration"):
        if header.get(key, "1") != "1":
            raise _Bad(f'header "{key}" {header[key]!r}: a reranker scores with one tree per round')
    idx = _int(header.get("max_feature_idx", ""), "max_feature_idx")
    if idx + 1 != n_features:
        raise _Bad(f'header "max_feature_idx" {idx}: a model of {idx + 1} features, the spec lists {n_features}')
    for key in ("feature_names", "feature_infos", "monotone_constraints"):
        if key in header and len(header[key].split(" ")) != n_features:
            raise _Bad(f'header "{key}" lists {len(header[key].split(" "))} values for {n_features} features')


def _ints(value: str, key: str) -> list[int]:
    return [_int(v, key) for v in value.split(" ")] if value else []


def _int(value: str, key: str) -> int:
    if not _INT.match(value) or len(value) > 11:
        raise _Bad(f'"{key}": {value[:20]!r} is not an integer')
    return int(value)


def _floats(value: str, key: str) -> list[float]:
    out = value.split(" ") if value else []
    for v in out:
        if not _FLOAT.match(v):
            raise _Bad(f'"{key}": {v[:20]!r} is not a number')
    return [float(v) for v in out]


def _check_lightgbm_tree(kv: dict[str, str], i: int, n_features: int, limits: ModelLimits) -> None:
    where = f"tree {i}"
    leaves = _int(kv.get("num_leaves", ""), f"{where} num_leaves")
    if not 1 <= leaves <= limits.max_leaves:
        raise _Bad(f"{where}: {leaves} leaves, expected 1 to {limits.max_leaves}")
    if kv.get("is_linear", "0") != "0":
        raise _Bad(f"{where}: a linear tree (not trained by this code)")
    nodes = leaves - 1
    arrays = {"split_feature": nodes, "decision_type": nodes, "left_child": nodes, "right_child": nodes,
              "threshold": nodes, "leaf_value": leaves}
    for key, n in arrays.items():
        if n and key not in kv:
            raise _Bad(f'{where}: "{key}" missing')
    ints = {k: _ints(kv.get(k, ""), f"{where} {k}") for k in ("split_feature", "decision_type", "left_child",
                                                              "right_child")}
    floats = {k: _floats(kv.get(k, ""), f"{where} {k}") for k in ("threshold", "leaf_value")}
    for key, values in (*ints.items(), *floats.items()):
        if len(values) != arrays[key]:
            raise _Bad(f'{where}: "{key}" has {len(values)} values, {arrays[key]} expected for {leaves} leaves')
    for key in ("split_gain", "leaf_weight", "leaf_count", "internal_value", "internal_weight", "internal_count"):
        if key in kv and len(kv[key].split(" ") if kv[key] else []) != (leaves if key.startswith("leaf") else nodes):
            raise _Bad(f'{where}: "{key}" has the wrong number of values for {leaves} leaves')
    if bad := [f for f in ints["split_feature"] if not 0 <= f < n_features]:
        raise _Bad(f"{where}: split feature {bad[0]}, the model has {n_features} features")
    if bad := [d for d in ints["decision_type"] if not 0 <= d < 16]:
        raise _Bad(f"{where}: decision type {bad[0]}")
    n_cat = _int(kv.get("num_cat", "0"), f"{where} num_cat")
    _check_categories(kv, where, n_cat, ints["decision_type"], floats["threshold"])
    _check_shape(ints["left_child"], ints["right_child"], leaves, where)


def _check_categories(kv: dict[str, str], where: str, n_cat: int, decisions: list[int], thresholds: list[float]
                      ) -> None:
    """Categorical splits: their threshold is an index into `cat_boundaries`, which slices `cat_threshold`."""
    if n_cat < 0 or n_cat > len(decisions):
        raise _Bad(f"{where}: num_cat {n_cat}")
    if n_cat == 0:
        if any(d & 1 for d in decisions):
            raise _Bad(f"{where}: a categorical split and num_cat 0")
        return
    bounds = _ints(kv.get("cat_boundaries", ""), f"{where} cat_boundaries")
    words = kv.get("cat_threshold", "")
    n_words = len(words.split(" ")) if words else 0
    _ints(words, f"{where} cat_threshold")
    if len(bounds) != n_cat + 1 or bounds[0] != 0 or bounds[-1] != n_words or any(
            b > a for b, a in itertools.pairwise(bounds)):
        raise _Bad(f'{where}: "cat_boundaries" do not slice "cat_threshold" into {n_cat} sets')
    for node, (d, t) in enumerate(zip(decisions, thresholds, strict=True)):
        if d & 1 and not (math.isfinite(t) and t == math.floor(t) and 0 <= t < n_cat):
            raise _Bad(f"{where}: node {node}'s categorical threshold {t} is not a set index below {n_cat}")


def _check_shape(left: list[int], right: list[int], leaves: int, where: str) -> None:
    """One tree from node 0: children are nodes (>= 0) or leaves (~leaf), each reached exactly once."""
    nodes = leaves - 1
    if nodes == 0:
        return
    seen_node = [False] * nodes
    seen_leaf = [False] * leaves
    stack = [0]
    seen_node[0] = True
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child >= nodes:
                    raise _Bad(f"{where}: node {node} has child {child}, the tree has {nodes} nodes")
                if seen_node[child]:
                    raise _Bad(f"{where}: node {child} is reached twice (a cycle or a shared node)")
                seen_node[child] = True
                stack.append(child)
            else:
                leaf = ~child
                if leaf >= leaves:
                    raise _Bad(f"{where}: node {node} has leaf {leaf}, the tree has {leaves} leaves")
                if seen_leaf[leaf]:
                    raise _Bad(f"{where}: leaf {leaf} is reached twice")
                seen_leaf[leaf] = True
    if not all(seen_node) or not all(seen_leaf):
        raise _Bad(f"{where}: nodes or leaves not reached from the root")


# ---- XGBoost -------------------------------------------------------------------------------------------


def _xgboost(data: bytes, n_features: int, limits: ModelLimits) -> None:
    try:
        doc = json.loads(data)
        learner = doc["learner"]
        n = int(learner["learner_model_param"]["num_feature"])
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree":
            raise _Bad(f"booster {booster.get('name')!r}, expected gbtree")
        trees = booster["model"]["trees"]
    except (ValueError, KeyError, TypeError) as e:
        raise _Bad(f"not an XGBoost JSON model ({type(e).__name__}: {e})") from None
    if n != n_features:
        raise _Bad(f"a model of {n} features, the spec lists {n_features}")
    if not isinstance(trees, list) or len(trees) > limits.max_trees:
        raise _Bad(f"{len(trees) if isinstance(trees, list) else 'no'} trees, the limit is {limits.max_trees}")
    for i, tree in enumerate(trees):
        try:
            _check_xgboost_tree(tree, f"tree {i}", n_features, limits)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, _Bad):
                raise
            raise _Bad(f"tree {i}: {type(e).__name__}: {e}") from None


def _check_xgboost_tree(tree: dict, where: str, n_features: int, limits: ModelLimits) -> None:
    n = int(tree["tree_param"]["num_nodes"])
    if not 1 <= n <= 2 * limits.max_leaves - 1:
        raise _Bad(f"{where}: {n} nodes, expected 1 to {2 * limits.max_leaves - 1}")
    left, right, feature = tree["left_children"], tree["right_children"], tree["split_indices"]
    for key in ("left_children", "right_children", "split_indices", "split_conditions", "default_left"):
        if not isinstance(tree[key], list) or len(tree[key]) != n:
            raise _Bad(f'{where}: "{key}" has not {n} values')
    if not all(isinstance(v, int) for v in (*left, *right, *feature)):
        raise _Bad(f"{where}: a child or split index that is not an integer")
    seen = [False] * n
    seen[0] = True
    stack = [0]
    while stack:
        node = stack.pop()
        if (left[node] == -1) != (right[node] == -1):
            raise _Bad(f"{where}: node {node} has one child")
        if left[node] == -1:
            continue
        if not 0 <= feature[node] < n_features:
            raise _Bad(f"{where}: split feature {feature[node]}, the model has {n_features} features")
        for child in (left[node], right[node]):
            if not 0 < child < n:
                raise _Bad(f"{where}: node {node} has child {child}, the tree has {n} nodes")
            if seen[child]:
                raise _Bad(f"{where}: node {child} is reached twice (a cycle or a shared node)")
            seen[child] = True
            stack.append(child)
    if not all(seen):
        raise _Bad(f"{where}: nodes not reached from the root")
    split_type = tree.get("split_type", [0] * n)
    if len(split_type) != n:
        raise _Bad(f'{where}: "split_type" has not {n} values')
    if any(split_type):
        _check_xgboost_categories(tree, where, n)


def _check_xgboost_categories(tree: dict, where: str, n: int) -> None:
    cat_nodes, segments, sizes = tree["categories_nodes"], tree["categories_segments"], tree["categories_sizes"]
    cats = tree["categories"]
    if not len(cat_nodes) == len(segments) == len(sizes):
        raise _Bad(f"{where}: categorical tables of different lengths")
    for node, start, size in zip(cat_nodes, segments, sizes, strict=True):
        if not (isinstance(node, int) and 0 <= node < n and 0 <= start and 0 <= size and start + size <= len(cats)):
            raise _Bad(f"{where}: a categorical split outside its tables")
