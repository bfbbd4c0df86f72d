"""Load what the server needs: from a bundle dir, or from the Hub as the original server did.

The premises archive is unpacked once per archive checksum into the cache
(so a restart only re-reads the parse cache), and the corpus is rebuilt with
the options recorded in the manifest, which fixes the premise count the
embeddings must match.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanpremise.bundle import (
    INT8_FILE,
    MODEL_DIR,
    ONNX_DIR,
    ONNX_FILE,
    PREMISES_ARCHIVE,
    BundleError,
    Manifest,
    embeddings_file_name,
    extract_premises_archive,
    sha256_file,
    verify_checksums,
)
from leanpremise.data import DataConfig, load_corpus
from leanpremise.data.config import default_cache_dir
from leanpremise.data.corpus import Corpus

logger = logging.getLogger(__name__)


@dataclass
class LoadedBundle:
    manifest: Manifest
    corpus: Corpus
    embeddings: np.ndarray
    model_dir: Path
    premises_dir: Path

    def onnx_path(self, int8: bool = False) -> Path | None:
        path = self.model_dir / ONNX_DIR / (INT8_FILE if int8 else ONNX_FILE)
        return path if path.is_file() else None


def unpack_premises(archive: Path, cache_dir: Path) -> Path:
    """Unpacked premises dir for `archive`, shared by every server start with the same archive."""
    digest = sha256_file(archive)[:20]
    target = cache_dir / "premises" / digest
    if (target / "revision").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{digest}."))
    try:
        extract_premises_archive(archive, tmp / "d")
        try:
            os.replace(tmp / "d", target)
        except OSError:
            if not (target / "revision").is_file():  # lost a race with another server: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacked %s to %s", archive, target)
    return target


def assemble(manifest: Manifest, archive: Path, embeddings_path: Path, model_dir: Path,
             cache_dir: Path | None) -> LoadedBundle:
    """Corpus from the archive + embeddings, checked against each other and the manifest."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    premises_dir = unpack_premises(archive, cache_dir)
    corpus = load_corpus(DataConfig(data_dir=premises_dir, filter=manifest.filter,
                                    mathlib_only=manifest.mathlib_only, nameless=manifest.nameless,
                                    cache_dir=cache_dir))
    try:
        emb = np.load(embeddings_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{embeddings_path}: not a readable .npy file ({e})") from e
    if emb.ndim != 2 or emb.shape[0] != len(corpus):
        raise BundleError(f"{embeddings_path}: shape {emb.shape} does not match the corpus of {len(corpus)} "
                          f"premises unpacked from {archive}")
    if manifest.dimension and emb.shape[1] != manifest.dimension:
        raise BundleError(f"{embeddings_path}: dimension {emb.shape[1]}, manifest says {manifest.dimension}")
    return LoadedBundle(manifest=manifest, corpus=corpus, embeddings=np.ascontiguousarray(emb, dtype=np.float32),
                        model_dir=model_dir, premises_dir=premises_dir)


def check_bundle(bundle: Path) -> Manifest:
    """The bundle's manifest, once it and every file it names are there (cheap: nothing is hashed or read)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle dir (write one with `leanpremise export`)")
    manifest = Manifest.read(bundle)
    for path in (bundle / PREMISES_ARCHIVE, bundle / manifest.embeddings, bundle / MODEL_DIR):
        if not path.exists():
            raise BundleError(f"{path}: missing from the bundle")
    return manifest


def load_bundle(bundle: Path, cache_dir: Path | None = None, verify: bool = True) -> LoadedBundle:
    bundle = Path(bundle)
    manifest = check_bundle(bundle)
    archive, emb = bundle / PREMISES_ARCHIVE, bundle / manifest.embeddings
    if verify:
        verify_checksums(bundle, manifest, [PREMISES_ARCHIVE, manifest.embeddings])
    return assemble(manifest, archive, emb, bundle / MODEL_DIR, cache_dir)


def parse_repo_at(spec: str) -> tuple[str, str | None]:
    """`owner/name@revision` -> (repo, revision); no `@` means the default branch."""
    repo, _, rev = spec.partition("@")
    if not repo or "/" not in repo:
        raise BundleError(f"{spec!r}: expected OWNER/NAME@REVISION")
    return repo, rev or None


def load_from_hub(data_repo: str, data_revision: str | None, model_id: str, model_revision: str | None,
                  cache_dir: Path | None = None) -> LoadedBundle:
    """Download premises.tar.gz, the embeddings and the model, as the original server's startup did."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    hub_cache = cache_dir / "hub"
    step = f"download {PREMISES_ARCHIVE} from {data_repo}@{data_revision}"
    try:
        archive = hf_hub_download(data_repo, PREMISES_ARCHIVE, repo_type="dataset", revision=data_revision,
                                  cache_dir=hub_cache)
        try:
            manifest = Manifest.read(Path(hf_hub_download(data_repo, "manifest.json", repo_type="dataset",
                                                          revision=data_revision, cache_dir=hub_cache)).parent)
        except EntryNotFoundError:  # data repos published by the original script have no manifest
            manifest = Manifest(model_name=model_id.split("/")[-1], revision=model_revision or "", dimension=0,
                                premise_count=0, unfiltered_premise_count=0, module_count=0,
                                embeddings=embeddings_file_name(model_id.split("/")[-1], model_revision or ""))
        step = f"download {manifest.embeddings} from {data_repo}@{data_revision}"
        emb = hf_hub_download(data_repo, manifest.embeddings, repo_type="dataset", revision=data_revision,
                              cache_dir=hub_cache)
        step = f"download the model {model_id}@{model_revision}"
        model_dir = snapshot_download(model_id, revision=model_revision, cache_dir=hub_cache)
    except BundleError:
        raise
    except Exception as e:  # one readable message for every network/hub failure
        raise BundleError(f"could not {step} (Hub endpoint {constants.ENDPOINT}): {type(e).__name__}: {e}") from e
    return assemble(manifest, Path(archive), Path(emb), Path(model_dir), cache_dir)
