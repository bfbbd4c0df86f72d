"""The static model the serving and export benchmarks run: sentence-transformers' `StaticEmbedding`
initialised from the packaged MiniLM's input embeddings, with MiniLM's tokenizer, then `Normalize`, saved as
a plain sentence-transformers directory (the format `train --encoder static` writes). Untrained: speed does
not depend on the vectors' values.

    python benchmarks/static_model.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_cache


def static_minilm(out: Path | None = None) -> Path:
    """The model dir, built once into `out` (default: <bench cache>/models/static-minilm) and reused."""
    out = out or bench_cache() / "models" / "static-minilm"
    if (out / "modules.json").exists():
        return out
    import numpy as np
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    from leanpremise.atomic import fresh_partial_dir, swap_in_dir
    from leanpremise.model.encoder import default_model_path

    minilm = default_model_path()
    weights = load_file(str(minilm / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    static = StaticEmbedding(Tokenizer.from_file(str(minilm / "tokenizer.json")),
                             embedding_weights=weights[key].astype(np.float32))
    work = fresh_partial_dir(out)
    SentenceTransformer(modules=[static, models.Normalize()], device="cpu").save(str(work))
    swap_in_dir(work, out)
    return out


def static_bundle_path(data_name: str) -> Path:
    """Where `export_speed.py --static` writes the static model's bundle of `data_name` (the serve
    benchmarks serve it from there)."""
    return bench_cache() / "bundles" / f"static-minilm-{data_name}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    print(static_minilm(ap.parse_args().out))
