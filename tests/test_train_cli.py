"""`leanpremise train` end to end: CLI, final model, revision handling, resuming a killed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from liveness import LIVENESS_S


def _env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_help_documents_original_and_training_flags():
    out = subprocess.run([sys.executable, "-m", "leanpremise", "train", "-h"], capture_output=True, text=True, check=False,
                         timeout=LIVENESS_S)
    assert out.returncode == 0, out.stderr
    for flag in ("--model_name_or_path", "--is_sentence_transformer", "--pooling_mode", "--mini_batch_size",
                 "--retrieval_mask_mode", "--num_negatives_per_state", "--hard_negatives", "--mathlib_only",
                 "--nameless", "--per_device_train_batch_size", "--resume_from_checkpoint", "--save_steps",
                 "--report_to", "--bf16", "--gather_across_devices", "--max_train_minutes"):
        assert flag in out.stdout, flag


def test_cli_end_to_end_on_sample_with_stale_output(tmp_path, tiny_model_dir, sample_dataset):
    """A run on new data moves the old run aside, trains, saves final/ with revision, evaluates and retrieves."""
    out_dir = tmp_path / "run"
    (out_dir / "final").mkdir(parents=True)
    (out_dir / "final" / "revision").write_text("some-old-revision\n")
    (out_dir / "checkpoint-99").mkdir()
    cmd = [sys.executable, "-m", "leanpremise", "train", "--model_name_or_path", str(tiny_model_dir),
           "--output_dir", str(out_dir), "--max_steps", "2", "--per_device_train_batch_size", "8",
           "--num_negatives_per_state", "2", "--resume_from_checkpoint", "True", "--evaluate_before", "False",
           "--retrieved_premises_dir", str(tmp_path / "rp"), "--n_valid", "100", "--n_test", "100",
           "--disable_tqdm", "True"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300, cwd=tmp_path, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "starting from scratch" in out.stdout
    assert (tmp_path / "run.stale-1" / "checkpoint-99").is_dir()
    assert (out_dir / "checkpoint-2").is_dir() and not (out_dir / "checkpoint-99").exists()
    final = out_dir / "final"
    assert (final / "revision").read_text().strip() == sample_dataset.revision
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(final), device="cpu").encode(["⊢ True"])
    assert emb.shape == (1, 32)
    assert "valid after training: R@8" in out.stdout
    assert (tmp_path / "rp" / "dot_valid-run.json").is_file() and (tmp_path / "rp" / "dot_test-run.json").is_file()




def _run(argv, ds, callbacks=None):
    from leanpremise.train.cli import parse
    from leanpremise.train.runner import run_training

    m, d, lo, r, t = parse(argv)
    return run_training(m, d, lo, r, t, callbacks=callbacks, dataset=ds)


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_model_dir, sample_dataset):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    def argv(out):
        return ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "4",
                "--save_steps", "2", "--per_device_train_batch_size", "8", "--num_negatives_per_state", "1",
                "--lr_scheduler_type", "constant", "--learning_rate", "1e-3", "--evaluate_before", "False",
                "--evaluate_after", "False", "--disable_tqdm", "True", "--seed", "5",
                "--resume_from_checkpoint", "True"]

    ref = _run(argv(tmp_path / "a"), sample_dataset).trainer.model.state_dict()
    with pytest.raises(KeyboardInterrupt):
        _run(argv(tmp_path / "b"), sample_dataset, callbacks=[Crash()])
    assert (tmp_path / "b" / "checkpoint-2").is_dir() and not (tmp_path / "b" / "final").exists()
    resumed = _run(argv(tmp_path / "b"), sample_dataset)
    assert resumed.steps == 4
    got = resumed.trainer.model.state_dict()
    for name, value in ref.items():
        assert torch.allclose(value, got[name], atol=1e-6), name
    first = _run(argv(tmp_path / "c").copy()[:-2] + ["--resume_from_checkpoint", "False", "--max_steps", "1"],
                 sample_dataset).trainer.model.state_dict()
    assert any(not torch.allclose(first[n], ref[n]) for n in ref)  # weights do move: the check above is real
    assert np.isfinite(resumed.train_seconds)


def test_bad_resume_path_is_a_clear_error(tmp_path, tiny_model_dir):
    from leanpremise.train.cli import main

    code = main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "x"),
                 "--resume_from_checkpoint", str(tmp_path / "nope"), "--max_steps", "1",
                 "--evaluate_before", "False", "--evaluate_after", "False"])
    assert code == 2


def test_default_output_dir_and_cpu_defaults(monkeypatch):
    from leanpremise.train.cli import CPU_BATCH_SIZE, CPU_MAX_SEQ_LENGTH, CPU_TRAIN_MINUTES, parse

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m, _, lo, r, t = parse([])
    assert Path(t.output_dir) == Path("output") / "all-MiniLM-L6-v2-trained"
    assert (m.max_seq_length, t.per_device_train_batch_size, r.max_train_minutes) == (
        CPU_MAX_SEQ_LENGTH, CPU_BATCH_SIZE, CPU_TRAIN_MINUTES)
    assert lo.retrieval_mask_mode == "no_positive" and lo.num_negatives_per_state == 3
    _, _, _, r, t = parse(["--num_train_epochs", "2", "--per_device_train_batch_size", "256", "--run_name", "x"])
    assert (r.max_train_minutes, t.per_device_train_batch_size, t.num_train_epochs) == (None, 256, 2)
    assert Path(t.output_dir) == Path("output") / "x"


def test_given_flags_are_never_overridden_by_the_cpu_defaults(monkeypatch):
    from leanpremise.train.cli import parse

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m, _, _, r, t = parse(["--per_device_train_batch_size", "64", "--max_seq_length", "256", "--max_steps", "3"])
    assert (t.per_device_train_batch_size, m.max_seq_length, t.max_steps, r.max_train_minutes) == (64, 256, 3, None)
    _, _, _, r, t = parse(["--per_device_train_batch_size=8", "--max_train_minutes", "2"])
    assert (t.per_device_train_batch_size, r.max_train_minutes, t.num_train_epochs) == (8, 2.0, 1)
    assert t.dataloader_pin_memory is False



def test_gpu_defaults_fill_only_what_is_left_out():
    from types import SimpleNamespace

    from leanpremise.train.cli import resolve_defaults

    m, r = SimpleNamespace(max_seq_length=None, encoder="transformer"), SimpleNamespace(max_train_minutes=None)
    t = SimpleNamespace(per_device_train_batch_size=None, num_train_epochs=None, max_steps=-1,
                        dataloader_pin_memory=True)
    resolve_defaults(m, r, t, has_gpu=True)
    assert (t.per_device_train_batch_size, t.num_train_epochs, m.max_seq_length, r.max_train_minutes,
            t.dataloader_pin_memory) == (64, 1, None, None, True)
    t = SimpleNamespace(per_device_train_batch_size=16, num_train_epochs=3, max_steps=-1, dataloader_pin_memory=True)
    resolve_defaults(m, r, t, has_gpu=False)
    assert (t.per_device_train_batch_size, t.num_train_epochs, r.max_train_minutes) == (16, 3, None)


@pytest.mark.parametrize("flag", ["--max_step", "--per_device_train_batch", "--split_see"])
def test_abbreviated_train_flags_are_errors(flag):
    from leanpremise.train.cli import UsageError, parse

    with pytest.raises(UsageError, match=f"unrecognized arguments: {flag}"):
        parse([flag, "2"])


def test_train_data_flags_are_the_data_configs_fields():
    """train and the other commands read the same argv into the same DataConfig."""
    import dataclasses

    from leanpremise.cli import build_parser, from_args
    from leanpremise.data.config import DataConfig
    from leanpremise.train.cli import parse

    argv = ["--split_seed", "3", "--filter", "False", "--mathlib_only", "--no_use_data_cache", "--workers", "2",
            "--n_valid", "7", "--split_mode", "all", "--data_dir", "/some/dir"]
    parser = build_parser()
    from_cli = from_args(parser.parse_args(["export-decls", *argv]), DataConfig)
    from_train = parse(argv + ["--output_dir", "o"])[1]
    assert from_train == from_cli
    assert (from_train.split_seed, from_train.filter, from_train.mathlib_only, from_train.use_data_cache,
            from_train.workers, from_train.split_mode) == (3, False, True, False, 2, "all")
    assert from_args(parser.parse_args(["export-decls"]), DataConfig) == DataConfig()
    sub = next(a for a in parser._actions if a.dest == "command").choices["export-decls"]
    shown = " ".join(sub.format_help().split())
    for f in dataclasses.fields(DataConfig):
        assert " ".join(f.metadata["help"].split()) in shown, f.name


def _leanpremise(*args, cwd=None):
    code = ("import sys; from leanpremise.cli import main; rc = main(sys.argv[1:]); "
            "print('heavy imported' if 'torch' in sys.modules else 'light', file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          timeout=300, cwd=cwd, env=_env(None))


def test_train_input_errors_are_one_line_before_the_slow_imports(tmp_path):
    (tmp_path / "not_an_extraction").mkdir()
    for data_dir, words in ((tmp_path / "missing", "does not exist"), (tmp_path / "not_an_extraction", "missing")):
        out = _leanpremise("train", "--data_dir", str(data_dir), "--max_steps", "1")
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("leanpremise train: error: ") and words in lines[0], lines
        assert lines[1] == "light"  # reported before torch/transformers were imported


def test_misspelled_train_flag_is_one_line(tmp_path):
    out = _leanpremise("train", "--max_step", "2")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "leanpremise train: error: unrecognized arguments: --max_step 2 (every flag: leanpremise train -h)"
    assert len(lines) == 2 and "Traceback" not in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine may support bf16")
def test_bf16_on_cpu_is_a_one_line_error():
    from leanpremise.train.cli import UsageError, parse

    with pytest.raises(UsageError, match="--bf16 needs a GPU"):
        parse(["--bf16", "True", "--max_steps", "1"])


def test_subcommand_flag_errors_show_the_subcommands_usage():
    for args, usage in ((["data", "stats", "--n_val", "3"], "usage: leanpremise data stats"),
                        (["export-decls", "--split_see", "1"], "usage: leanpremise export-decls"),
                        (["data", "split", "--seed", "1", "--out", "x.json"], "usage: leanpremise data split")):
        out = _leanpremise(*args)
        assert out.returncode == 2, args
        assert usage in out.stderr and "usage: leanpremise [-h]" not in out.stderr, out.stderr
        assert "unrecognized arguments" in out.stderr
    assert "--seed is now --split_seed" in out.stderr


def test_a_time_budget_stop_is_said(tmp_path, tiny_model_dir, sample_dataset, capsys):
    result = _run(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"),
                   "--max_steps", "40", "--max_train_minutes", "0.0001", "--per_device_train_batch_size", "4",
                   "--num_negatives_per_state", "1", "--evaluate_before", "False", "--evaluate_after", "False",
                   "--disable_tqdm", "True", "--save_strategy", "no"], sample_dataset)
    out = capsys.readouterr().out
    assert result.steps < 40
    assert f"the time budget (--max_train_minutes 0.0001) ended training after step {result.steps} of 40" in out
