"""Server configuration: CLI flags over environment variables over defaults.

The environment variable names and defaults are the original server's
(MAX_K, MAX_NEW_PREMISES, LRU_CACHE_SIZE, DTYPE, EMBED_SERVICE_URL, ...), so
an existing `.env` keeps working; EMBED_BACKEND, EMBED_BATCH_SIZE and
BUNDLE_DIR are new.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "tei")
DTYPES = ("float32", "float16", "bfloat16")


class ConfigError(ValueError):
    pass


@dataclass
class ServeConfig:
    bundle: Path | None = None
    """Bundle dir written by `leanpremise export` (env BUNDLE_DIR)."""
    data_repo: str | None = None
    """With --from_hub: dataset repo holding premises.tar.gz and embeddings/ (env DATA_REPO)."""
    data_revision: str | None = None
    model_id: str | None = None
    model_revision: str | None = None
    data_dir: Path | None = None
    """Where hub downloads and unpacked premises go (env DATA_DIR); default: the leanpremise cache."""
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    """auto, torch, onnx, onnx-int8 or tei. auto: on CPU the bundle's int8 ONNX model if it has one, else its
    float32 ONNX model, else PyTorch; on a GPU, PyTorch (see docs/decisions.md)."""
    device: str = "cpu"
    embed_service_url: str | None = None
    """text-embeddings-inference base URL for backend=tei (POST {url}/embed)."""
    embed_service_timeout: float | None = None
    embed_service_max_concurrent_inputs: int = 128
    """Uncached texts (states + new premises) being embedded at once; more gets 503 + Retry-After."""
    max_client_batch_size: int = 32
    """Texts one request hands to the embedder at a time (and per TEI call)."""
    embed_batch_size: int = 64
    """Texts per in-process encode call; concurrent requests' chunks are batched up to this."""
    embed_workers: int | None = None
    """Embedding workers, each with its own tokenizer (default: 2 on CPU, 1 on a GPU or with TEI)."""
    embed_threads: int | None = None
    """Threads per CPU embedding worker (default: the cores divided among the workers)."""
    search_batch_size: int = 16
    """Most queued queries (states of concurrent requests) the search worker takes in one call."""
    lru_cache_size: int = 131072
    max_new_premises: int = 2048
    max_k: int = 1024
    dtype: str = "float32"
    """Precision the corpus embeddings are kept and ranked at: float32 (a float16 copy is scanned, then
    rescored exactly), or float16/bfloat16 (only the 16-bit copy: half the memory)."""
    verify: bool = True
    """Check the bundle's sha256 checksums of the premises archive and embeddings at startup."""
    retry_after_s: int = 1
    search_threads: int | None = None
    """Threads scoring the embeddings, faiss's and BLAS's (default 1 up to 4 cores, else a quarter of them):
    a scan is bound by memory bandwidth, and pool threads spinning between scans took a core from embedding."""
    extra: dict = field(default_factory=dict)

    def validate(self) -> ServeConfig:
        if self.backend not in BACKENDS:
            raise ConfigError(f"EMBED_BACKEND/--backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"DTYPE/--dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.backend == "tei" and not self.embed_service_url:
            raise ConfigError("backend tei needs EMBED_SERVICE_URL / --embed_service_url")
        for name in ("embed_service_max_concurrent_inputs", "max_client_batch_size", "embed_batch_size",
                     "max_k", "lru_cache_size", "search_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.upper()}: must be at least 1, got {getattr(self, name)}")
        for name in ("embed_workers", "embed_threads", "search_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name.upper()}: must be at least 1, got {getattr(self, name)}")
        if self.max_new_premises < 0:
            raise ConfigError(f"MAX_NEW_PREMISES: must be >= 0, got {self.max_new_premises}")
        self.max_client_batch_size = min(self.max_client_batch_size, self.embed_service_max_concurrent_inputs)
        if self.bundle is None and not (self.data_repo and self.model_id):
            raise ConfigError("give a bundle dir (BUNDLE_DIR) or --from_hub DATA_REPO@REV MODEL_REPO@REV")
        return self


ENV_NAMES = {
    "bundle": "BUNDLE_DIR",
    "data_repo": "DATA_REPO",
    "data_revision": "DATA_REVISION",
    "model_id": "MODEL_ID",
    "model_revision": "MODEL_REVISION",
    "data_dir": "DATA_DIR",
    "backend": "EMBED_BACKEND",
    "embed_service_url": "EMBED_SERVICE_URL",
    "embed_service_timeout": "EMBED_SERVICE_TIMEOUT",
    "embed_service_max_concurrent_inputs": "EMBED_SERVICE_MAX_CONCURRENT_INPUTS",
    "max_client_batch_size": "MAX_CLIENT_BATCH_SIZE",
    "embed_batch_size": "EMBED_BATCH_SIZE",
    "embed_workers": "EMBED_WORKERS",
    "embed_threads": "EMBED_THREADS",
    "search_batch_size": "SEARCH_BATCH_SIZE",
    "search_threads": "SEARCH_THREADS",
    "lru_cache_size": "LRU_CACHE_SIZE",
    "max_new_premises": "MAX_NEW_PREMISES",
    "max_k": "MAX_K",
    "dtype": "DTYPE",
}


def _convert(name: str, raw: str, kind):
    text = raw.split("#", 1)[0].strip()  # .env files carry trailing comments
    if text == "":
        return None
    try:
        if kind in ("int", int, "int | None"):
            return int(text)
        if kind in ("float | None", float, "float"):
            return float(text)
        if kind in ("Path | None", Path):
            return Path(text)
    except ValueError as e:
        raise ConfigError(f"{ENV_NAMES[name]}={raw!r}: {e}") from e
    return text


def config_from_env(environ: dict | None = None, **overrides) -> ServeConfig:
    """Defaults, then environment variables, then the non-None `overrides` (CLI flags)."""
    env = os.environ if environ is None else environ
    types = {f.name: f.type for f in fields(ServeConfig)}
    values = {}
    for name, var in ENV_NAMES.items():
        if var in env:
            value = _convert(name, env[var], types[name])
            if value is not None:
                values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServeConfig(**values)
