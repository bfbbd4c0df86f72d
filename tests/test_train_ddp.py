"""Gathering across 2 gloo processes gives the loss and gradients of one process over the whole batch.

DDP's gradient all-reduce makes the ranks agree whatever the loss does, so agreement between
ranks proves nothing. The reference here is a single process over the concatenated batch (same
model, same data, same retrieval mask rule): with `gather_across_devices` the mean of the ranks'
losses and their averaged gradients must equal it; without gathering each state sees only its
own rank's candidates, and the same comparison must fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_loss_case import PER_RANK, features_for, loss_and_grads, whole_batch
from liveness import LIVENESS_S

WORLD = 2
WORKER = Path(__file__).with_name("ddp_loss_case.py")


def run_ranks(tmp_path: Path, model_dir: Path, gather: bool) -> list[dict]:
    """Start WORLD worker processes joined through a file store; return what each rank saved."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    store = tmp_path / "store"
    flag = "gather" if gather else "local"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(WORLD), str(store), str(model_dir),
                               str(tmp_path), flag], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for r in range(WORLD)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=LIVENESS_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-4000:]
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """Loss and gradients of one process over the concatenated batch of both ranks."""
    batch = whole_batch(WORLD)
    return loss_and_grads(str(tiny_model_dir), features_for(batch, slice(0, WORLD * PER_RANK)), gather=False)


def _matches(ranks: list[dict], reference) -> tuple[bool, bool]:
    """(mean of the ranks' losses == reference loss, averaged gradients == reference gradients)."""
    ref_loss, ref_grads = reference
    losses = ranks[0]["losses"]
    loss_ok = abs(sum(losses) / len(losses) - ref_loss) < 1e-5
    grads = ranks[0]["grads"]
    assert grads.keys() == ref_grads.keys()
    grads_ok = all(torch.allclose(grads[n], ref_grads[n], atol=1e-6, rtol=1e-4) for n in grads)
    return loss_ok, grads_ok


@pytest.mark.parametrize("gather", [True, False], ids=["gathered", "local-negative-check"])
def test_ranks_equal_one_process_over_the_whole_batch_only_when_gathering(tmp_path, tiny_model_dir, reference,
                                                                           gather):
    """Gathered: loss and gradients match the reference. Local candidates only: both differ, which
    shows the comparison can fail."""
    ranks = run_ranks(tmp_path, tiny_model_dir, gather=gather)
    losses = ranks[0]["losses"]
    assert losses[0] != pytest.approx(losses[1])  # each rank's loss covers only its own states
    assert any(float(g.abs().max()) > 1e-4 for g in reference[1].values())  # the gradients are not ~0
    assert _matches(ranks, reference) == (gather, gather)
