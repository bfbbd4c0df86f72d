"""Two DDP processes on CPU (gloo) for a few steps end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

WORKER = """
import sys, torch
from leanpremise.train.cli import parse
from leanpremise.train.runner import run_training
out = sys.argv[1]
m, d, lo, r, t = parse(sys.argv[2:])
res = run_training(m, d, lo, r, t)
state = {k: v.detach().cpu() for k, v in res.trainer.model.state_dict().items()}
torch.save({"state": state, "world": t.world_size, "steps": res.steps}, f"{out}/rank{t.process_index}.pt")
"""


def test_two_process_ddp_ranks_agree(tmp_path, tiny_model_dir):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           str(script), str(tmp_path),
           "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "run"),
           "--max_steps", "3", "--per_device_train_batch_size", "4", "--num_negatives_per_state", "1",
           "--learning_rate", "1e-3", "--gather_across_devices", "True", "--use_cpu", "True",
           "--ddp_backend", "gloo", "--evaluate_before", "False", "--evaluate_after", "False",
           "--disable_tqdm", "True", "--save_strategy", "no"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=240, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [3, 3]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    from sentence_transformers import SentenceTransformer

    init = SentenceTransformer(str(tiny_model_dir), device="cpu").state_dict()
    assert any(not torch.allclose(init[n], a[n]) for n in a)  # they trained, and stayed in sync
    assert (tmp_path / "run" / "final" / "revision").is_file()
