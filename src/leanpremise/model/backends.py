"""Ways to turn texts into normalised embeddings: PyTorch, ONNX Runtime, or a TEI HTTP service.

Each embedder is synchronous and called from one worker thread; the
embedding service in front of it does the caching, batching and limiting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class EmbeddingFailed(RuntimeError):
    """The backend could not embed (TEI unreachable or answering garbage)."""


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def max_seq_length(model_dir: Path, tokenizer) -> int:
    """The truncation length sentence-transformers uses for this model."""
    cfg = Path(model_dir) / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)


class TorchEmbedder:
    name = "torch"

    def __init__(self, model_dir: Path, device: str = "cpu", batch_size: int = 64):
        from leanpremise.model.encoder import load_model

        self.batches_well = not str(device).startswith("cpu")
        self.model = load_model(model_dir, device)
        self.dim = self.model.get_embedding_dimension()
        self.max_length = int(getattr(self.model, "max_seq_length", None) or 512)
        """Tokens the model keeps of a text (sentence-transformers truncates to it)."""
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        from leanpremise.model.encoder import encode_texts

        return encode_texts(self.model, texts, batch_size=self.batch_size)


class OnnxEmbedder:
    """The bundle's ONNX graph (pooling and normalisation inside) under ONNX Runtime, with the HF tokenizer."""

    batches_well = False
    """On CPU, padding a short text to a long one's length costs more than one call per request saves."""

    def __init__(self, model_dir: Path, onnx_path: Path, batch_size: int = 1, threads: int | None = None,
                 session=None):
        """`batch_size` 1 runs each text unpadded, which on CPU is faster per text than batches padded to
        their longest (docs/decisions.md). `session`: an ONNX Runtime session to share (`run` is
        thread-safe; each embedder keeps its own tokenizer)."""
        from transformers import AutoTokenizer

        self.name = "onnx-int8" if "qint8" in Path(onnx_path).name else "onnx"
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.max_length = max_seq_length(model_dir, self.tokenizer)
        self.session = session or onnx_session(onnx_path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.batch_size = batch_size
        self.dim = 0
        declared = self.session.get_outputs()[1].shape[1]
        self.dim = declared if isinstance(declared, int) else int(self.encode(["x"]).shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share padding
        parts = []
        for lo in range(0, len(texts), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            feed = {n: enc[n].astype(np.int64) for n in self.inputs}
            parts.append(self.session.run(["sentence_embedding"], feed)[0])
        emb = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty_like(emb)
        out[order] = emb
        return _normalise(out)


def onnx_session(onnx_path: Path, threads: int | None = None, expected_sha256: str | None = None):
    """A CPU ONNX Runtime session running each call on `threads` threads that do not spin when idle.

    The graph is read once and ONNX Runtime is given those bytes, checked against `expected_sha256` when
    it is known (a bundle's manifest): a file swapped after the bundle was verified is refused, not run."""
    import hashlib

    import onnxruntime as ort

    graph = Path(onnx_path).read_bytes()
    if expected_sha256 is not None and hashlib.sha256(graph).hexdigest() != expected_sha256:
        raise ValueError(f"{onnx_path}: its sha256 differs from the bundle manifest's (changed since the bundle "
                         "was verified)")

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    # Idle pool threads spinning for work would take the cores other requests' workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


class TEIEmbedder:
    """A text-embeddings-inference service: POST {url}/embed {"inputs": [...], "truncate": true}."""

    name = "tei"
    batches_well = True

    def __init__(self, url: str, dim: int, timeout: float | None = None, client_batch_size: int = 32):
        import httpx

        self.url = url.rstrip("/") + "/embed"
        self.dim = dim
        self.client_batch_size = client_batch_size
        self.client = httpx.Client(timeout=timeout)

    def encode(self, texts: list[str]) -> np.ndarray:
        import httpx

        parts = []
        for lo in range(0, len(texts), self.client_batch_size):
            batch = texts[lo : lo + self.client_batch_size]
            try:
                resp = self.client.post(self.url, json={"inputs": batch, "truncate": True, "normalize": True})
                resp.raise_for_status()
                arr = np.asarray(resp.json(), dtype=np.float32)
            except (httpx.HTTPError, ValueError, TypeError) as e:
                raise EmbeddingFailed(f"embedding service {self.url}: {type(e).__name__}: {e}") from e
            if arr.shape != (len(batch), self.dim):
                raise EmbeddingFailed(f"embedding service {self.url} returned shape {arr.shape}, "
                                      f"expected ({len(batch)}, {self.dim})")
            parts.append(arr)
        return _normalise(np.concatenate(parts)) if parts else np.zeros((0, self.dim), dtype=np.float32)


