"""The server process's CPU and memory settings: thread pools of the libraries it loads, and handing free heap
back after a load."""

from __future__ import annotations


def text_bound(embedder, bundle, chars_per_token: int) -> int:
    """Characters of a state or decl that can matter: the model's max sequence length (in tokens) times a
    generous bound on the characters one token covers; beyond that the tokenizer truncates anyway."""
    from leanpremise.model.backends import max_seq_length

    tokens = getattr(embedder, "max_length", None) or max_seq_length(bundle.model_dir, None)
    return int(tokens) * chars_per_token


def limit_blas_threads(threads: int | None, cpus: int | None = None) -> int:
    """Set the BLAS pool (the search's rescoring) to the search's `threads` (default: 1 up to 4 cores, else
    cpus // 4), the count its faiss scan uses too."""
    import os

    from threadpoolctl import threadpool_limits

    cpus = cpus or os.cpu_count() or 1
    threads = threads or (1 if cpus <= 4 else cpus // 4)
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def scan_shards(shards: int | None, cpus: int | None = None) -> int:
    """Row ranges one scan runs side by side (SCAN_SHARDS; default: 2 on two cores or more, so a lone
    request's scan takes both cores of an idle 2-core server; figures in docs/figures.md, "serve-speed")."""
    import os

    return shards or min(2, cpus or os.cpu_count() or 1)


def limit_torch_threads(config, search_threads: int) -> None:
    """Where torch is loaded but not the embedding backend (which sets its own threads), keep its OpenMP
    pool small, since idle OpenMP threads spin; a server on ONNX Runtime need not load torch at all."""
    import sys

    if config.backend == "torch" or "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(search_threads)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system after a load: parsing a corpus leaves hundreds of
    megabytes free but mapped, which would count against every later revision (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to hand back this way
        pass
