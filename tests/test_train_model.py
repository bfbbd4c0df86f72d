"""Loading the model to train: code shipped with a model runs only when trusted; saved ST models stay as saved."""

from __future__ import annotations

import json
import shutil

import pytest

from leanpremise.model.encoder import RemoteCodeRefused, remote_code_refused_as_one_line
from leanpremise.train.args import ModelArguments
from leanpremise.train.model import build_model

EVIL = '''
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import BertConfig, BertModel


class EvilConfig(BertConfig):
    model_type = {model_type!r}


class EvilModel(BertModel):
    config_class = EvilConfig
'''


def custom_code_dir(tmp_path, tiny_model_dir, model_type="bert"):
    """The tiny BERT with an auto_map naming evil.py, which writes a marker file when imported."""
    target = tmp_path / "custom"
    shutil.copytree(tiny_model_dir.parent / "hf", target)
    marker = tmp_path / "marker"
    (target / "evil.py").write_text(EVIL.format(marker=str(marker), model_type=model_type))
    config = json.loads((target / "config.json").read_text())
    config.update(model_type=model_type, architectures=["EvilModel"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (target / "config.json").write_text(json.dumps(config))
    return target, marker


def test_train_refuses_a_model_with_custom_code_in_one_line_and_runs_none_of_it(tmp_path, tiny_model_dir, capsys):
    from leanpremise.train.cli import main

    model_dir, marker = custom_code_dir(tmp_path, tiny_model_dir)
    assert main(["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust_remote_code" in err and "config.json" in err
    assert not marker.exists()
    with pytest.raises(RemoteCodeRefused, match="--trust_remote_code"):  # the library path refuses too
        build_model(ModelArguments(model_name_or_path=str(model_dir)), device="cpu")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_trust_remote_code_runs_the_models_code(tmp_path, tiny_model_dir):
    model_dir, marker = custom_code_dir(tmp_path, tiny_model_dir, model_type="evil-bert")
    model = build_model(ModelArguments(model_name_or_path=str(model_dir), trust_remote_code=True,
                                       pooling_mode="mean"), device="cpu")
    assert marker.read_text() == "ran"
    assert type(model[0].auto_model).__name__ == "EvilModel"


def test_transformers_refusal_of_hub_code_becomes_one_line(tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    model_dir, marker = custom_code_dir(tmp_path, tiny_model_dir, model_type="evil-bert")
    with pytest.raises(RemoteCodeRefused) as info, remote_code_refused_as_one_line(model_dir):
        AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    assert len(str(info.value).splitlines()) == 1 and not marker.exists()


def test_trust_remote_code_flag_parses_like_transformers():
    from leanpremise.train.cli import parse, trusted

    assert parse([])[0].trust_remote_code is False
    for argv in (["--trust_remote_code"], ["--trust_remote_code", "True"], ["--trust_remote_code=true"]):
        assert parse(argv)[0].trust_remote_code is True and trusted(argv), argv
    assert not trusted(["--trust_remote_code", "False"]) and not parse(["--trust_remote_code", "False"])[0].trust_remote_code


def pooling_of(model):
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    pools = [m for m in model if isinstance(m, Pooling)]
    return pools[0].pooling_mode, any(isinstance(m, Normalize) for m in model)


def test_a_saved_sentence_transformer_keeps_its_mean_pooling(tiny_model_dir):
    model = build_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), device="cpu")
    assert pooling_of(model) == ("mean", True)


def test_a_hub_sentence_transformer_keeps_its_own_modules(tmp_path, tiny_model_dir, monkeypatch):
    """A Hub id (here served from an offline cache) with modules.json is loaded, not rebuilt with lasttoken."""
    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-mean"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = build_model(ModelArguments(model_name_or_path="someone/tiny-mean"), device="cpu")
    assert pooling_of(model) == ("mean", True)
