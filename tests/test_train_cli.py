"""`leanpremise train` end to end: CLI, final model, revision handling, resuming a killed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_help_documents_original_and_training_flags():
    out = subprocess.run([sys.executable, "-m", "leanpremise", "train", "-h"], capture_output=True, text=True, check=False,
                         timeout=120)
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
