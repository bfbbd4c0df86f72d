"""Which embedders a server runs, and how many: the backend setting resolved against the bundle and the
machine (the embedders themselves are `leanpremise.model.backends`)."""

from __future__ import annotations

from pathlib import Path

from leanpremise.model.backends import OnnxEmbedder, TEIEmbedder, TorchEmbedder, onnx_session
from leanpremise.model.static import StaticEncoder
from leanpremise.serve.embedding.static_tokens import PieceCachedStaticEncoder


def worker_layout(config, cpus: int | None = None) -> tuple[int, int]:
    """(embedding workers, threads each): on CPU two workers by default, splitting the cores, so two
    requests' states are embedded side by side (a short text keeps several threads poorly busy); one
    worker for a GPU or a TEI service, which batch instead."""
    import os

    cpus = cpus or os.cpu_count() or 1
    on_cpu = config.backend != "tei" and str(config.device).startswith("cpu")
    workers = config.embed_workers or (min(2, cpus) if on_cpu else 1)
    threads = config.embed_threads or max(1, cpus // workers)
    return workers, threads


def make_embedders(config, bundle) -> tuple[list, object | None]:
    """(one embedder per worker, see worker_layout; a one-thread background embedder for bulk work on CPU,
    else None), each with its own tokenizer; ONNX embedders of one thread count share a session."""
    workers, threads = worker_layout(config)
    make, on_cpu = _embedder_factory(config, bundle, threads)
    return [make(threads) for _ in range(workers)], (make(1) if on_cpu else None)


def _embedder_factory(config, bundle, threads: int):
    """(threads -> a new embedder of the configured backend, whether it runs on this machine's CPU)."""
    if config.backend == "tei":
        return (lambda _: TEIEmbedder(config.embed_service_url, bundle.embeddings.shape[1],
                                      config.embed_service_timeout, config.max_client_batch_size)), False
    on_cpu = str(config.device).startswith("cpu")
    static = getattr(bundle.manifest, "model_type", "transformer") == "static"
    if static and config.backend == "auto":
        return _static_factory(bundle, config.token_cache_entries), True
    if static and config.backend in ("onnx", "onnx-int8"):
        raise FileNotFoundError(f"{bundle.model_dir}: a static model has no ONNX graph; serve it with --backend auto "
                                "(numpy) or torch")
    path = onnx_choice(config.backend, bundle, on_cpu)
    if path is not None:
        sessions: dict[int, object] = {}  # one per thread count: workers share the model's memory

        def make_onnx(n: int) -> OnnxEmbedder:
            if n not in sessions:
                sessions[n] = onnx_session(path, n, manifest_sha256(bundle, path))
            return OnnxEmbedder(bundle.model_dir, path, batch_size=1, threads=n, session=sessions[n])

        return make_onnx, True
    if on_cpu:
        import torch  # torch's threads are per process, not per model: set once for every worker

        torch.set_num_threads(threads)
    return (lambda _: TorchEmbedder(bundle.model_dir, config.device, config.embed_batch_size)), on_cpu


def _static_factory(bundle, token_cache_entries: int):
    """threads -> a numpy encoder of the bundle's static model: the first loads (and checks) the token
    vectors, the others share them with a tokenizer and a cache of tokenized pieces each
    (serve/embedding/static_tokens.py; numpy runs one thread per call: `threads` is moot)."""
    first: list[StaticEncoder] = []

    def make_static(_: int) -> StaticEncoder:
        if not first:
            first.append(PieceCachedStaticEncoder(bundle.model_dir, max_pieces=token_cache_entries))
            return first[0]
        return first[0].clone()

    return make_static


def manifest_sha256(bundle, path: Path) -> str | None:
    """The sha256 the bundle's manifest lists for `path` (None for a file it does not list, or a bundle
    without a root dir), so a model file is checked on the very bytes that are loaded."""
    root = getattr(bundle, "root", None)
    if root is None:
        return None
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None
    return bundle.manifest.checksums.get(rel)


def onnx_choice(backend: str, bundle, on_cpu: bool) -> Path | None:
    """The ONNX model a backend setting runs, or None for PyTorch.

    auto on CPU takes the int8 model when the bundle has one: faster than float32 for a Recall change
    within noise (figures in docs/decisions.md); then the float32 model; on a GPU, PyTorch."""
    if backend == "auto":
        if not on_cpu:
            return None
        return bundle.onnx_path(int8=True) or bundle.onnx_path(int8=False)
    if backend in ("onnx", "onnx-int8"):
        path = bundle.onnx_path(int8=backend == "onnx-int8")
        if path is None:
            raise FileNotFoundError(f"{bundle.model_dir}/onnx: no {'int8 ' if backend == 'onnx-int8' else ''}"
                                    "ONNX model in this bundle (re-export with --onnx / --int8)")
        return path
    return None
