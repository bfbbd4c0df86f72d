"""The static model's numpy encoder (model/static.py): the model's own encode within 1e-6, and token-vector
files that cannot be trusted refused in one line naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from static_models import build_static_model

TEXTS = ["theorem Nat.add_comm (a b : Nat) : a + b = b + a", "", "⊢ ∀ x y , x ⊔ y = y ⊔ x " * 40,
         "zzz unknown words only", "  ", "lemma le_trans : a ≤ b → b ≤ c → a ≤ c", "x"]


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory) -> Path:
    return build_static_model(tmp_path_factory.mktemp("static") / "model")


@pytest.mark.parametrize("options", [{}, {"normalize": False}, {"prompt": "goal: "}, {"truncate": 5}],
                         ids=["normalize", "no-normalize", "default-prompt", "truncation"])
def test_numpy_encoder_equals_the_models_own_encode(tmp_path, options):
    from sentence_transformers import SentenceTransformer

    from leanpremise.model.static import StaticEncoder

    model_dir = build_static_model(tmp_path / "m", **options)
    texts = TEXTS + [f"lemma n{i} : {i} < {i} + 1 ∧ p ∨ q" for i in range(40)]
    want = SentenceTransformer(str(model_dir), device="cpu").encode(texts, normalize_embeddings=True,
                                                                     convert_to_numpy=True)
    encoder = StaticEncoder(model_dir)
    got = encoder.encode(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(encoder.clone().encode(texts[:1]), want[:1], atol=1e-6, rtol=0)
    if "prompt" not in options:
        assert not got[1].any()  # no tokens: a zero row, as the model gives
    assert encoder.encode([]).shape == (0, 16)


def test_model_type_tells_static_from_transformer(static_dir, tiny_model_dir, tmp_path):
    from leanpremise.model.static import model_type

    assert model_type(static_dir) == "static"
    assert model_type(tiny_model_dir) == "transformer"
    assert model_type(tmp_path / "nothing-here") == "transformer"
    assert model_type("sentence-transformers/all-MiniLM-L6-v2") == "transformer"


def _corrupt(model_dir: Path, how: str) -> None:
    """Spoil the token-vector file of `model_dir` in one way."""
    from safetensors.numpy import save_file

    path = model_dir / "model.safetensors"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not-safetensors":
        path.write_bytes(b"\x80\x04\x95 a pickle, say" * 10)
    elif how == "too-few-rows":
        save_file({"embedding.weight": np.ones((3, 16), dtype=np.float32)}, str(path))
    elif how == "not-a-matrix":
        save_file({"embedding.weight": np.ones(16, dtype=np.float32)}, str(path))
    elif how == "nan":
        vectors = np.ones((len(json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]), 16),
                          dtype=np.float32)
        vectors[7, 3] = np.nan
        save_file({"embedding.weight": vectors}, str(path))
    elif how == "pickle-only":
        path.rename(model_dir / "pytorch_model.bin")


@pytest.mark.parametrize("how", ["truncated", "not-safetensors", "too-few-rows", "not-a-matrix", "nan",
                                 "pickle-only"])
def test_a_bad_token_vector_file_is_refused_in_one_line_naming_it(static_dir, tmp_path, how):
    from leanpremise.model.static import StaticEncoder, StaticModelError

    model_dir = tmp_path / "m"
    shutil.copytree(static_dir, model_dir)
    _corrupt(model_dir, how)
    with pytest.raises(StaticModelError) as err:
        StaticEncoder(model_dir)
    message = str(err.value)
    assert "\n" not in message and str(model_dir / "model.safetensors") in message, message


def test_a_module_the_numpy_encoder_cannot_reproduce_is_refused(static_dir, tmp_path):
    from leanpremise.model.static import StaticEncoder, StaticModelError

    model_dir = tmp_path / "m"
    shutil.copytree(static_dir, model_dir)
    modules = json.loads((model_dir / "modules.json").read_text())
    modules.insert(1, {"idx": 1, "name": "1", "path": "1_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (model_dir / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(StaticModelError, match="Dense.*only Normalize"):
        StaticEncoder(model_dir)


def test_export_refuses_a_corrupt_static_model_in_one_line(static_dir, serve_data_dir, cache_dir, tmp_path):
    """Through the CLI: exit 1, one error line naming the file, no bundle."""
    model_dir = tmp_path / "m"
    shutil.copytree(static_dir, model_dir)
    _corrupt(model_dir, "truncated")
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(model_dir), "--data_dir",
                           str(serve_data_dir), "--cache_dir", str(cache_dir), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "model.safetensors" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "b").exists()
