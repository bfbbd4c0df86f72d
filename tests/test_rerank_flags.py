"""`rerank train | apply` read their flags into the dataclasses the code runs on (RerankConfig as it is, the
shared ModelFlags and OutputFlags), under the names users typed; training never changes the config it is
given."""

from __future__ import annotations

import dataclasses

import pytest

from leanpremise.cli import build_parser, from_args
from leanpremise.eval.ranking_flags import ModelFlags, OutputFlags
from leanpremise.eval.rerank.cli import RerankApplyFlags, RerankTrainFlags
from leanpremise.eval.rerank.config import RerankConfig

TRAIN_ARGV = ["rerank", "train", "--out", "rr", "--rankers", "bm25,usage", "--split", "all", "--init", "old",
              "--depth", "50", "--local_bound", "8", "--no_structure", "--library", "xgboost", "--max_states", "99",
              "--simulate_share", "0.1", "--client_share", "0.7", "--seed", "3", "--learning_rate", "0.2",
              "--num_leaves", "7", "--min_data_in_leaf", "5", "--lambda_l2", "2", "--min_sum_hessian_in_leaf", "0.5",
              "--max_rounds", "30", "--early_stopping", "10", "--threads", "2",
              "--model", "m", "--model_name", "mm", "--corpus_embeddings", "e.npy"]
"""Every flag `rerank train` had before its config became its flags dataclass."""


def test_every_train_flag_lands_in_the_config_the_training_runs_on():
    args = build_parser().parse_args(TRAIN_ARGV)
    cfg, flags, model = from_args(args, RerankConfig, RerankTrainFlags, ModelFlags)
    assert cfg == RerankConfig(depth=50, local_bound=8, structure=False, library="xgboost", max_states=99,
                               simulate_share=0.1, client_share=0.7, seed=3, learning_rate=0.2, num_leaves=7,
                               min_data_in_leaf=5, lambda_l2=2.0, min_sum_hessian_in_leaf=0.5, max_rounds=30,
                               early_stopping=10, threads=2)
    assert (flags.out.name, flags.rankers, flags.split, flags.init.name) == ("rr", "bm25,usage", "all", "old")
    assert (model.model, model.model_name, model.corpus_embeddings.name) == ("m", "mm", "e.npy")


def test_defaults_are_the_configs_own():
    args = build_parser().parse_args(["rerank", "train", "--out", "rr"])
    assert from_args(args, RerankConfig) == RerankConfig()


def test_extra_is_no_flag_but_code_may_set_it():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rerank", "train", "--out", "rr", "--extra", "{}"])
    assert RerankConfig(extra={"max_bin": 63}).extra == {"max_bin": 63}


def test_apply_flags_are_the_shared_output_flags():
    args = build_parser().parse_args(["rerank", "apply", "--reranker", "rr", "--split", "valid", "--k", "64",
                                      "--out_dir", "o", "--metrics_out", "m.json", "--files", "f.json",
                                      "--client", "pre-june"])
    out, flags = from_args(args, OutputFlags, RerankApplyFlags)
    assert (out.split, out.k, out.out_dir.name, out.metrics_out.name) == ("valid", 64, "o", "m.json")
    assert (flags.reranker.name, flags.files.name, flags.client) == ("rr", "f.json", "pre-june")


def test_continuing_a_reranker_derives_its_depths_without_changing_the_given_config(sample_dataset, tmp_path):
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import train_reranker

    rankers, table = build_rankers(sample_dataset, IndexView.full(sample_dataset.corpus), ["bm25"], progress=False)
    ids = sample_dataset.split_ids("valid")
    small = RerankConfig(depth=20, local_bound=4, max_rounds=2, max_states=80)
    base = train_reranker(sample_dataset, rankers, table, ids[:80], ids[80:120], small, tmp_path / "base",
                          progress=False, counted=False)
    given = dataclasses.replace(small, depth=40, local_bound=9)
    spec = train_reranker(sample_dataset, rankers, table, ids[:80], ids[80:120], given, tmp_path / "more",
                          progress=False, counted=False, init=tmp_path / "base")
    assert (given.depth, given.local_bound) == (40, 9)
    assert (spec.depth, spec.local_bound) == (base.depth, base.local_bound) == (20, 4)
