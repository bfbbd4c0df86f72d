"""Export a SentenceTransformer to ONNX (pooling and normalisation inside the graph), optionally int8.

The server runs the graph with ONNX Runtime and the model's own tokenizer, so
it needs neither PyTorch nor optimum at request time. The graph's inputs are
the tokenizer's (`input_ids`, `attention_mask`, and `token_type_ids` when the
tokenizer makes them); it outputs `last_hidden_state` (the layout optimum and
sentence-transformers' ONNX backend read) and `sentence_embedding`, the
normalised vector the rest of the system uses.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)
OUTPUTS = ("last_hidden_state", "sentence_embedding")
OPSET = 17


def onnx_input_names(tokenizer) -> list[str]:
    """The tokenizer outputs the transformer consumes, in a fixed order."""
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")
    return names


class _Wrapper:
    """Built lazily so that importing this module does not import torch."""

    @staticmethod
    def build(st_model, input_names: list[str]):
        import torch

        class SentenceEmbeddingGraph(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.st = st_model

            def forward(self, *inputs):
                features = dict(zip(input_names, inputs))
                out = self.st(features)
                emb = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1)
                return out["token_embeddings"], emb

        return SentenceEmbeddingGraph().eval()


def export_onnx(model_dir: Path, out_path: Path) -> Path:
    """Trace the SentenceTransformer in `model_dir` into `out_path` with dynamic batch and sequence axes."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu").eval()
    tokenizer = st.tokenizer
    names = onnx_input_names(tokenizer)
    sample = tokenizer(["theorem a : True", "def b (n : Nat) : Nat := n + 1"], padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in names)
    wrapper = _Wrapper.build(st, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    axes["sentence_embedding"] = {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, args, str(out_path), input_names=names, output_names=list(OUTPUTS),
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    return out_path


class _QuantiserChatter(logging.Filter):
    """Drops onnxruntime.quantization's root-logger INFO lines (one per tensor) and its advice to run its
    pre-processing first (shape inference and graph optimisation, which dynamic quantisation of our traced
    graph does not need); its other warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname or "quantization" not in record.pathname:
            return True
        if record.levelno < logging.WARNING:
            return False
        return not (record.levelno == logging.WARNING and "pre-process" in record.getMessage())


def quantize_int8(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantisation (per-channel weights, activations at run time): no calibration data needed.

    Per-channel scales keep the int8 embeddings much closer to float32 ones than per-tensor scales
    (docs/decisions.md has the figures).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantiser logs through the root logger (`logging.info(...)`)
    chatter = _QuantiserChatter()
    root.addFilter(chatter)
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(chatter)
    return out_path
