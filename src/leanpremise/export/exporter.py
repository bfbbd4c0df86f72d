"""Build a bundle: model (+ ONNX), premises archive, corpus embeddings, manifest; swap it in atomically.

Everything is written into `.<BUNDLE>.partial/` next to the target and
renamed over it at the end, so a reader never sees half a bundle. Embedding
chunks live in `.<BUNDLE>.chunks/` until the bundle is complete, so an
interrupted export resumes where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes, follow_umask, fresh_partial_dir, swap_in_dir
from leanpremise.bundle.layout import (
    MANIFEST,
    MODEL_DIR,
    PREMISES_ARCHIVE,
    embeddings_file_name,
    onnx_file,
    revision_slug,
    text_hashes_file_name,
)
from leanpremise.bundle.manifest import Manifest, SplitRecord
from leanpremise.bundle.side_rankers import usage_state_ids
from leanpremise.bundle.verify import bundle_files
from leanpremise.data import DataConfig, load_corpus, load_dataset
from leanpremise.export.corpus_embeddings import (
    CHUNK_SIZE,
    embeddings_npy_bytes,
    encode_in_chunks,
    load_precomputed,
    npy_bytes,
    texts_fingerprint,
)
from leanpremise.export.fusion_export import check_fusion_file, uses_usage, write_hybrid
from leanpremise.export.premises_archive import write_premises_archive
from leanpremise.export.rerank_export import (
    check_dense_identity,
    check_reranker_dir,
    uses_dataset,
    write_rerank,
)
from leanpremise.export.reuse import embedded_texts, reuse_rows, text_hashes
from leanpremise.model.identity import model_identity
from leanpremise.model.onnx import export_onnx, quantize_int8
from leanpremise.model.static import StaticEncoder, model_type

logger = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    model: str
    """Local SentenceTransformer dir or hub id."""
    out: Path
    data: DataConfig = field(default_factory=DataConfig)
    onnx: bool = True
    int8: bool = False
    corpus_embeddings: Path | None = None
    """Reuse these embeddings (shape-checked) instead of encoding the corpus."""
    model_name: str | None = None
    """MODEL_NAME in `embeddings/<MODEL_NAME>-<revision>.npy`; default: the model dir's name."""
    batch_size: int = 64
    chunk_size: int = CHUNK_SIZE
    progress: bool = True
    device: str | None = None
    revision: str | None = None
    """Branch / file-name revision; default: the data's `revision` file made ref-safe."""
    reuse: list[Path] = field(default_factory=list)
    """Older bundles whose rows are copied where this model already embedded the same text."""
    fusion: Path | None = None
    """A fusion.json (`retrieve --hybrid` / `fuse`): put it and its lexical rankers into the bundle."""
    rerank: Path | None = None
    """A reranker directory (`rerank train`): put it and the rankers it reads into the bundle."""
    usage_states: str = "train"
    """The proof states the usage counts count (bundle/side_rankers.USAGE_STATES): `all` for a project's bundle."""


def chunks_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.chunks"


class ModelDirError(ValueError):
    """--model names something that does not load as a model."""


def export_bundle(cfg: ExportConfig) -> Manifest:
    """Write the bundle for `cfg` into a partial dir, then swap it in; returns its manifest."""
    from leanpremise.model.encoder import load_model, model_display_name

    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    fusion = check_fusion_file(cfg.fusion) if cfg.fusion is not None else None  # a bad file fails at once
    reranker = check_reranker_dir(cfg.rerank) if cfg.rerank is not None else None
    needs_states = (fusion is not None and uses_usage(fusion)) or (reranker is not None and uses_dataset(reranker))
    dataset = load_dataset(cfg.data) if needs_states else None  # usage counts
    corpus = dataset.corpus if dataset is not None else load_corpus(cfg.data)
    if not len(corpus):
        raise ValueError(f"{cfg.data.data_dir}: the corpus is empty after filtering; nothing to export")
    kind = model_type(cfg.model)
    if kind == "static":  # its token vectors checked before anything is loaded or written
        StaticEncoder(cfg.model)
    try:
        model = load_model(cfg.model, cfg.device or "cpu")
    except (OSError, ValueError) as e:  # a folder that is not a model: one line, not a traceback
        raise ModelDirError(f"--model {cfg.model}: cannot load it as a sentence-transformers or transformers "
                            f"model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    dim = model.get_embedding_dimension()
    emb = None
    if cfg.corpus_embeddings is not None and cfg.reuse:
        raise ValueError("--corpus_embeddings and --reuse exclude each other (both say where rows come from)")
    if cfg.corpus_embeddings is not None:  # checked first: a wrong file should fail before minutes of work
        emb = load_precomputed(cfg.corpus_embeddings, len(corpus), dim)
        logger.info("reusing corpus embeddings from %s", cfg.corpus_embeddings)
    for source in cfg.reuse:  # likewise: a wrong path fails before the model is saved
        Manifest.read(source)
    work = fresh_partial_dir(out)
    onnx_rel, int8_rel = write_model(model, work, cfg, kind)
    write_premises_archive(corpus_data_dir(cfg.data), work / PREMISES_ARCHIVE)
    hybrid_rel = write_hybrid(fusion, corpus, work, cfg.progress, dataset, cfg.usage_states) if fusion is not None else None
    identity = model_identity(work / MODEL_DIR)
    rerank_rel = None
    if reranker is not None:
        given = {identity} | ({model_identity(Path(cfg.model))} if Path(cfg.model).is_dir() else set())
        check_dense_identity(reranker, cfg.rerank, given)
        rerank_rel = write_rerank(reranker, cfg.rerank, corpus, work, cfg.progress, dataset,
                                  cfg.usage_states)
    hashes = text_hashes(embedded_texts(model, corpus.texts))
    reuse = None
    embedder = corpus_embedder(model, kind, work / MODEL_DIR, cfg)
    if emb is None and cfg.reuse:
        emb, reuse = embed_with_reuse(model, embedder, corpus.texts, hashes, identity, chunks_dir(out), cfg)
    elif emb is None:
        emb = encode_corpus(embedder, corpus.texts, identity, chunks_dir(out), cfg, dim)
    model_name = cfg.model_name or model_display_name(cfg.model)
    revision = cfg.revision or revision_slug(corpus.revision)
    emb_rel = embeddings_file_name(model_name, revision)
    atomic_write_bytes(work / emb_rel, embeddings_npy_bytes(emb))
    hashes_rel = text_hashes_file_name(emb_rel)
    atomic_write_bytes(work / hashes_rel, npy_bytes(hashes))
    manifest = Manifest(
        model_name=model_name, revision=revision, dimension=dim, premise_count=len(corpus),
        unfiltered_premise_count=len(corpus.unfiltered_names), module_count=len(corpus.modules),
        embeddings=emb_rel, **asdict(cfg.data.corpus_options()), data_revision=corpus.revision, model_type=kind,
        onnx=onnx_rel,
        onnx_int8=int8_rel, source_model=str(cfg.model), created=datetime.now(UTC).isoformat(timespec="seconds"),
        model_identity=identity, text_hashes=hashes_rel, reuse=reuse, hybrid=hybrid_rel, rerank=rerank_rel,
        split=SplitRecord.of(cfg.data) if dataset is not None else None,  # the usage counts' train states
        usage_states=({"states": cfg.usage_states, "count": len(usage_state_ids(dataset, cfg.usage_states))}
                      if dataset is not None else None),
    )
    manifest.checksums, manifest.sizes = bundle_files(work)  # last: covers every file written above
    atomic_write_bytes(work / MANIFEST, manifest.to_json())
    follow_umask(work)  # another user can serve it where the umask lets them
    swap_in_dir(work, out)
    shutil.rmtree(chunks_dir(out), ignore_errors=True)
    logger.info("wrote bundle %s: %d premises, dimension %d, in %.0fs", out, len(corpus), dim,
                time.perf_counter() - t0)
    return manifest


def write_model(model, work: Path, cfg: ExportConfig, kind: str = "transformer") -> tuple[str | None, str | None]:
    """The model in sentence-transformers format, plus the ONNX graphs asked for; their bundle paths.

    int8 is quantised from the float32 graph, so that one is written whenever either is asked for and
    removed again when only int8 was wanted. A static model gets no graph: the server embeds with it in
    numpy (model/static.py), faster than any graph would run.
    """
    model_dir = work / MODEL_DIR
    model.save(str(model_dir))
    logger.info("saved %s model %s (dimension %d) to the bundle", kind, cfg.model, model.get_embedding_dimension())
    if kind == "static":
        if cfg.int8:
            logger.warning("--int8 does not apply to a static model (it has no ONNX graph to quantise; the "
                           "server embeds with its token vectors in numpy): no int8 model written")
        return None, None
    if not (cfg.onnx or cfg.int8):
        return None, None
    onnx_path = export_onnx(model_dir, onnx_file(model_dir))
    onnx_rel = onnx_path.relative_to(work).as_posix()
    int8_rel = None
    if cfg.int8:
        int8_rel = quantize_int8(onnx_path, onnx_file(model_dir, int8=True)).relative_to(work).as_posix()
    if not cfg.onnx:
        onnx_path.unlink()
        onnx_rel = None
    logger.info("exported ONNX%s", " and int8 ONNX" if cfg.int8 else "")
    return onnx_rel, int8_rel


def corpus_embedder(model, kind: str, saved_dir: Path, cfg: ExportConfig):
    """(texts -> normalised rows, texts per call) for the corpus: a static model's numpy encoder over the
    model as saved into the bundle (the very encoder a server runs), one call per chunk since it does not
    pad; else the model's own encode, batched."""
    if kind == "static":
        return StaticEncoder(saved_dir).encode, cfg.chunk_size
    return (lambda batch: _encode(model, batch, cfg.batch_size)), cfg.batch_size


def encode_corpus(embedder, texts: list[str], identity: str, chunk_dir: Path, cfg: ExportConfig, dim: int):
    """Corpus embeddings in resumable chunks keyed by the saved model's content identity and the texts;
    `embedder`: `corpus_embedder`'s pair."""
    encode, batch_size = embedder
    key = f"{identity[:32]}-{texts_fingerprint(texts)[:32]}"
    return encode_in_chunks(encode, texts, chunk_dir, key, dim, chunk_size=cfg.chunk_size, progress=cfg.progress,
                            batch_size=batch_size)


def embed_with_reuse(model, embedder, texts: list[str], hashes, identity: str, chunk_dir: Path,
                     cfg: ExportConfig):
    """Rows copied from `cfg.reuse` where the same model embedded the same text, the others encoded (in
    resumable chunks, like a full export); returns the embeddings and the record for the manifest."""
    import numpy as np

    dim = model.get_embedding_dimension()
    emb, found, record = reuse_rows(cfg.reuse, model, identity, hashes, dim)
    missing = np.flatnonzero(~found)
    if len(missing):
        emb[missing] = encode_corpus(embedder, [texts[i] for i in missing.tolist()], identity, chunk_dir, cfg, dim)
    logger.info("--reuse: %d rows reused, %d embedded", record.reused, record.embedded)
    return emb, record


def corpus_data_dir(data: DataConfig) -> Path:
    from leanpremise.data.dataset import resolve_data_dir

    return resolve_data_dir(data)


def _encode(model, texts: list[str], batch_size: int):
    from leanpremise.model.encoder import encode_texts

    return encode_texts(model, texts, batch_size=batch_size)
