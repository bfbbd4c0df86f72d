"""Shared fixtures: the shipped sample, hand-written data dirs, tiny models built from a config, and the bundle
the serve tests serve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A per-session cache dir so tests never read a cache left by an earlier code version."""
    return tmp_path_factory.mktemp("lp-cache")


@pytest.fixture(scope="session")
def sample_dataset(cache_dir):
    """The shipped sample, loaded with default options."""
    from leanpremise.data import DataConfig, load_dataset

    return load_dataset(DataConfig(cache_dir=cache_dir))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from leanpremise.model.encoder import default_model_path

    return default_model_path()


def build_tiny_model(out_dir: Path, hidden: int = 32, layers: int = 2, pooling: str = "mean") -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a SentenceTransformer."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from leanpremise.model.encoder import default_model_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)
    hf_dir = out_dir / "hf"
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=128)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode=pooling)
    model = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    st_dir = out_dir / "st"
    model.save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def serve_data_dir(tmp_path_factory) -> Path:
    """The serve tests' hand-made data dir (serve_helpers.build_data_dir); read only."""
    from serve_helpers import build_data_dir

    return build_data_dir(tmp_path_factory.mktemp("serve-data") / "data")


@pytest.fixture(scope="session")
def serve_bundle(serve_data_dir, tiny_model_dir, cache_dir, tmp_path_factory) -> Path:
    """The tiny model's bundle of `serve_data_dir`, with its ONNX model, exported once for every serve test
    (which copy it before changing anything)."""
    from serve_helpers import export_for_tests

    return export_for_tests(tiny_model_dir, tmp_path_factory.mktemp("serve-bundle") / "bundle", serve_data_dir,
                            cache_dir, onnx=True)


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def decl(name, line, column=0, kind="theorem", human=True, type_="True", doc=None, args=()):
    return {"name": name, "kind": kind, "args": list(args), "type": type_, "doc": doc,
            "decl": f"{kind} {name} : {type_}", "line": line, "column": column,
            "isProp": kind == "theorem", "isHumanTheorem": human}


def state(decl_name, src_lines: int, recs=(), text="⊢ True", col_text="theorem x := by "):
    src = "\n" * src_lines + col_text
    return {"declName": decl_name, "srcUpToTactic": src, "declUpToTactic": col_text, "state": text,
            "nextTactic": "simp", "nextTacticHammerRecommendation": [],
            "declHammerRecommendation": [f"({r}, notInSimpAll)" for r in recs]}


def make_data_dir(root: Path, modules: dict, imports: dict, decls: dict, states: dict,
                  blacklist=(), revision="v4.0.0") -> Path:
    """Write a hand-made data dir in the ntp-toolkit layout.

    modules: ordered list of module names via dict keys; imports: module -> list of imported modules;
    decls / states: module -> list of rows (use `decl(...)` / `state(...)`).
    """
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "Modules.jsonl", [{"name": m} for m in modules])
    for m in modules:
        write_jsonl(root / "Imports" / f"{m}.jsonl", [{"name": i, "isDirect": True} for i in imports.get(m, [])])
        if m in decls:
            write_jsonl(root / "Declarations" / f"{m}.jsonl", decls[m])
        if m in states:
            write_jsonl(root / "TrainingDataWithPremises" / f"{m}.jsonl", states[m])
    (root / "Declarations").mkdir(exist_ok=True)
    (root / "TrainingDataWithPremises").mkdir(exist_ok=True)
    (root / "HammerBlacklist.jsonl").write_text(json.dumps({"hammerBlacklist": list(blacklist)}))
    (root / "revision").write_text(revision + "\n")
    return root


def sample_closure(roots, dst: Path) -> Path:
    """The import closure of `roots` in the shipped sample, written to `dst` as an extraction of its own
    (small, so tests that rewrite or re-export a whole data dir stay fast)."""
    import shutil

    from leanpremise.data.sample import sample_data_dir

    src = sample_data_dir()
    keep = set(roots)
    for root in roots:
        keep |= {json.loads(ln)["name"] for ln in (src / "Imports" / f"{root}.jsonl").read_text().splitlines()}
    listed = [ln for ln in (src / "Modules.jsonl").read_text().splitlines() if json.loads(ln)["name"] in keep]
    dst.mkdir(parents=True)
    (dst / "Modules.jsonl").write_text("\n".join(listed) + "\n")
    for name in ("revision", "HammerBlacklist.jsonl"):
        shutil.copy(src / name, dst / name)
    for part in ("Imports", "Declarations", "TrainingDataWithPremises"):
        (dst / part).mkdir()
        for ln in listed:
            f = src / part / f"{json.loads(ln)['name']}.jsonl"
            if f.exists():
                shutil.copy(f, dst / part / f.name)
    return dst
