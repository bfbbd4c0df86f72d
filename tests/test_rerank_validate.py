"""A reranker's model file is checked before LightGBM sees it (issue 28, point 5): crafted files that would
hang or crash the process are refused in one line naming the file, a genuine model loads from the checked
text and predicts as the original, and the depths a bundle's files state are bounded by their schemas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crafted_models import CRAFTS, craft, reseal

N_FEATURES = 5


@pytest.fixture(scope="module")
def model():
    """A small lambdarank model with a categorical column (so categorical splits are checked too)."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, N_FEATURES))
    x[:, 4] = rng.integers(0, 6, 600)
    y = ((x[:, 0] > 0) | (x[:, 4] == 3)).astype(int)
    params = {"objective": "lambdarank", "verbose": -1, "num_leaves": 8, "min_data_in_leaf": 5, "cat_smooth": 1,
              "min_data_per_group": 5, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, group=[30] * 20, categorical_feature=[4]), num_boost_round=6)
    return booster, x


def check(text: str, limits=None):
    from leanpremise.rank.rerank.validate import ModelLimits, lightgbm_model_str

    return lightgbm_model_str(text.encode(), Path("rr/model.txt"), N_FEATURES, limits or ModelLimits())


def test_a_genuine_model_loads_from_the_checked_text_and_predicts_the_same(model):
    import lightgbm as lgb

    booster, x = model
    text = booster.model_to_string()
    assert "num_cat=1" in text  # a categorical split is among those checked
    checked = lgb.Booster(model_str=check(text))
    np.testing.assert_array_equal(checked.predict(x, num_threads=1), booster.predict(x, num_threads=1))


@pytest.mark.parametrize("how, says", [
    ("self-loop", "reached twice"), ("out-of-range child", "child 99999"),
    ("out-of-range feature", f"split feature {N_FEATURES + 7}"), ("wrong tree_sizes", "tree_sizes"),
    ("truncated", "truncated"),
])
def test_each_crafted_model_is_refused_in_one_line_naming_the_file(model, how, says):
    from leanpremise.rank.rerank.spec import RerankerFileError

    assert how in CRAFTS
    with pytest.raises(RerankerFileError) as e:
        check(craft(model[0].model_to_string(), how, N_FEATURES))
    assert str(e.value).startswith("rr/model.txt: ") and says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("edit, says", [
    (lambda t: t.replace("cat_boundaries=0 ", "cat_boundaries=0 9", 1), "cat_boundaries"),
    (lambda t: t.replace("max_feature_idx=4", "max_feature_idx=9"), "max_feature_idx"),
    (lambda t: t.replace("num_leaves=", "num_leaves=+", 1), "num_leaves"),
    (lambda t: t.replace("is_linear=0", "is_linear=1", 1), "linear"),
    (lambda t: t.replace("\nnum_cat=", "\nnum_cat=0\nnum_cat=", 1), "given twice"),
    (lambda t: t.replace("tree\n", "tree\nnum_trees=1\n", 1), "unknown key"),
])
def test_other_inconsistencies_are_refused(model, edit, says):
    from leanpremise.rank.rerank.spec import RerankerFileError

    text = model[0].model_to_string()
    edited = reseal(edit(text))
    assert edited != text
    with pytest.raises(RerankerFileError, match=says):
        check(edited)


def test_tree_count_and_leaves_are_bounded_by_the_limits(model):
    from leanpremise.rank.rerank.spec import RerankerFileError
    from leanpremise.rank.rerank.validate import ModelLimits

    text = model[0].model_to_string()
    check(text, ModelLimits(max_trees=6, max_leaves=8))
    with pytest.raises(RerankerFileError, match="more than the limit of 5"):
        check(text, ModelLimits(max_trees=5, max_leaves=8))
    with pytest.raises(RerankerFileError, match="expected 1 to 7"):
        check(text, ModelLimits(max_trees=6, max_leaves=7))


def test_a_model_file_that_differs_from_its_hash_is_refused(model, tmp_path):
    import hashlib

    from leanpremise.rank.rerank.model import checked_model
    from leanpremise.rank.rerank.spec import RerankerFileError, RerankerSpec

    path = tmp_path / "model.txt"
    text = model[0].model_to_string()
    path.write_text(text)
    spec = RerankerSpec(library="lightgbm", model_file="model.txt", feature_set=1, rankers=[], depth=10,
                        local_bound=0, features=[{"name": f"f{i}", "version": 1} for i in range(N_FEATURES)])
    assert checked_model(spec, path, sha256=hashlib.sha256(text.encode()).hexdigest())
    with pytest.raises(RerankerFileError, match="sha256 differs"):
        checked_model(spec, path, sha256="0" * 64)


def test_unbounded_depths_are_refused_by_the_schemas():
    from pydantic import ValidationError

    from leanpremise.rank.fusion import FusionSpec
    from leanpremise.rank.rerank.spec import RerankerSpec
    from leanpremise.rank.runs import MAX_LIST_DEPTH

    base = {"library": "lightgbm", "model_file": "model.txt", "feature_set": 1, "features": [], "rankers": []}
    RerankerSpec(**base, depth=MAX_LIST_DEPTH, local_bound=MAX_LIST_DEPTH)
    for field in ("depth", "local_bound"):
        with pytest.raises(ValidationError, match=field):
            RerankerSpec(**{**base, "depth": 100, "local_bound": 64, field: 10**9})
    fusion = {"method": "rrf", "rankers": ["bm25"], "weights": {"bm25": 1.0}}
    FusionSpec(**fusion, k=MAX_LIST_DEPTH)
    with pytest.raises(ValidationError, match="k"):
        FusionSpec(**fusion, k=10**9)


def xgb_tree(left, right, feature, n=None):
    n = len(left) if n is None else n
    return {"tree_param": {"num_nodes": str(n)}, "left_children": left, "right_children": right,
            "split_indices": feature, "split_conditions": [0.0] * len(left), "default_left": [0] * len(left)}


@pytest.mark.parametrize("tree, says", [
    (xgb_tree([1, 1, -1], [2, 2, -1], [0, 0, 0]), "reached twice"),
    (xgb_tree([1, -1, -1], [99999, -1, -1], [0, 0, 0]), "child 99999"),
    (xgb_tree([1, -1, -1], [2, -1, -1], [N_FEATURES, 0, 0]), f"split feature {N_FEATURES}"),
    (xgb_tree([1, -1], [2, -1], [0, 0], n=3), "has not 3 values"),
])
def test_crafted_xgboost_trees_are_refused(tree, says):
    import json

    from leanpremise.rank.rerank.spec import RerankerFileError
    from leanpremise.rank.rerank.validate import ModelLimits, xgboost_model_bytes

    def doc(t):
        return json.dumps({"learner": {"learner_model_param": {"num_feature": str(N_FEATURES)},
                                       "gradient_booster": {"name": "gbtree", "model": {"trees": [t]}}}}).encode()

    xgboost_model_bytes(doc(xgb_tree([1, -1, -1], [2, -1, -1], [3, 0, 0])), Path("m.json"), N_FEATURES,
                        ModelLimits())
    with pytest.raises(RerankerFileError, match=says):
        xgboost_model_bytes(doc(tree), Path("m.json"), N_FEATURES, ModelLimits())
