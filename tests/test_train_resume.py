"""Resuming: `--resume_from_checkpoint True` takes the newest complete checkpoint, skipping half-written ones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from leanpremise.train.runs import checkpoint_problem, resolve_resume


def _run(argv, ds):
    from leanpremise.train.cli import parse
    from leanpremise.train.runner import run_training

    m, d, lo, r, t = parse(argv)
    return run_training(m, d, lo, r, t, dataset=ds)


def argv(tiny_model_dir, out):
    return ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "4",
            "--save_steps", "2", "--per_device_train_batch_size", "8", "--num_negatives_per_state", "1",
            "--lr_scheduler_type", "constant", "--learning_rate", "1e-3", "--evaluate_before", "False",
            "--evaluate_after", "False", "--disable_tqdm", "True", "--seed", "5", "--resume_from_checkpoint", "True"]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_model_dir, sample_dataset):
    """A real 4-step run saving checkpoint-2 and checkpoint-4, and its final weights."""
    out = tmp_path_factory.mktemp("resume") / "run"
    final = _run(argv(tiny_model_dir, out), sample_dataset).trainer.model.state_dict()
    assert checkpoint_problem(out / "checkpoint-2") is None and checkpoint_problem(out / "checkpoint-4") is None
    return out, {k: v.clone() for k, v in final.items()}


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(two_checkpoints, tmp_path, tiny_model_dir,
                                                                     sample_dataset, capsys):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints[0], out)
    shutil.rmtree(out / "final")
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])  # killed while saving
    resumed = _run(argv(tiny_model_dir, out), sample_dataset)
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if "Skipping" in line]
    assert len(skipped) == 1 and "checkpoint-4" in skipped[0] and "model.safetensors" in skipped[0]
    assert f"Resuming from the latest checkpoint {out / 'checkpoint-2'}" in printed
    assert resumed.steps == 4
    got = resumed.trainer.model.state_dict()
    for name, value in two_checkpoints[1].items():  # steps 3 and 4 redone: the uninterrupted run's weights
        assert torch.allclose(value, got[name], atol=1e-6), name


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    (lambda c: (c / "trainer_state.json").write_text('{"global_step": 4, "log_hi'), "trainer_state.json is unreadable"),
    (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:-100]), "optimizer.pt"),
    (lambda c: (c / "model.safetensors").write_bytes(b"\x10"), "model.safetensors"),
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes() + b"\0"),
     "model.safetensors is"),
])
def test_each_kind_of_incomplete_checkpoint_is_skipped_with_its_reason(two_checkpoints, tmp_path, capsys, damage,
                                                                       reason):
    out = tmp_path / "run"
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(two_checkpoints[0] / name, out / name)
    damage(out / "checkpoint-4")
    assert reason in checkpoint_problem(out / "checkpoint-4")
    assert resolve_resume("True", out) == str(out / "checkpoint-2")
    assert reason in capsys.readouterr().out
    with pytest.raises(ValueError, match="incomplete"):  # named explicitly: an error, not a crash mid-load
        resolve_resume(str(out / "checkpoint-4"), out)


def test_no_complete_checkpoint_starts_from_scratch(two_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints[0] / "checkpoint-2", out / "checkpoint-2")
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    (out / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({**state, "global_step": None}))
    assert resolve_resume("True", out) is None
    assert "starting training from scratch" in capsys.readouterr().out
