"""Load what the server needs: from a bundle dir, or from the Hub as the original server did.

Every file is checked against the manifest first: the bundle must hold exactly the files it lists, inside
the bundle dir, each of its size and sha256 (or, in the fast check, large files by size only). Hub
downloads are pinned to one commit per repository (logged) and checked alike. The premises archive is
unpacked once per archive checksum into the cache (so a restart only re-reads the parse cache), and the
corpus is rebuilt with the options recorded in the manifest, which fixes the premise count the embeddings
must match.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from leanpremise.bundle.archive import ArchiveLimits, extract_premises_archive
from leanpremise.bundle.corpus import bundle_corpus
from leanpremise.bundle.layout import (
    MANIFEST,
    MODEL_DIR,
    PREMISES_ARCHIVE,
    BundleError,
    embeddings_file_name,
    onnx_file,
)
from leanpremise.bundle.manifest import Manifest
from leanpremise.bundle.verify import (
    check_finite_rows,
    check_inventory,
    read_verified_npy,
    sha256_file,
    sha256_handle,
    verify_bundle_files,
    verify_file,
)
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
    root: Path | None = None
    """The bundle dir (None for a Hub download): where `manifest.hybrid` and its files are."""

    def onnx_path(self, int8: bool = False) -> Path | None:
        path = onnx_file(self.model_dir, int8)
        return path if path.is_file() else None


def unpack_premises(archive: Path, cache_dir: Path, sha256: str | None = None,
                    limits: ArchiveLimits | None = None) -> Path:
    """Unpacked premises dir for `archive`, shared by every server start with the same archive.

    `sha256`: the archive's, when it was just verified (saves hashing it again); else it is hashed here,
    never taken from a manifest unchecked (a damaged archive must not be cached under a good digest).
    What is unpacked is read from the handle just hashed, so an archive replaced after its verification is
    refused, not unpacked under the verified digest."""
    digest = (sha256 or sha256_file(archive))[:20]
    target = cache_dir / "premises" / digest
    if (target / "revision").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{digest}."))
    try:
        with open(archive, "rb") as fh:
            if sha256_handle(fh)[:20] != digest:
                raise BundleError(f"{archive}: changed since it was verified (its sha256 differs now)")
            fh.seek(0)
            extract_premises_archive(archive, tmp / "d", limits, fileobj=fh)
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
             cache_dir: Path | None, archive_sha256: str | None = None,
             limits: ArchiveLimits | None = None, embeddings_sha256: str | None = None) -> LoadedBundle:
    """Corpus from the archive (unpacked within `limits`) + embeddings, checked against each other and the
    manifest; `embeddings_sha256`: checked on the bytes read (read once, see read_verified_npy). Every
    row must be finite."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    premises_dir = unpack_premises(archive, cache_dir, archive_sha256, limits)
    corpus = bundle_corpus(manifest, premises_dir, cache_dir)
    if embeddings_sha256 is not None:
        emb = read_verified_npy(embeddings_path, embeddings_sha256)
    else:
        try:
            emb = np.load(embeddings_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BundleError(f"{embeddings_path}: not a readable .npy file ({e})") from e
    if emb.ndim != 2 or emb.shape[0] != len(corpus):
        raise BundleError(f"{embeddings_path}: shape {emb.shape} does not match the corpus of {len(corpus)} "
                          f"premises unpacked from {archive}")
    if manifest.dimension and emb.shape[1] != manifest.dimension:
        raise BundleError(f"{embeddings_path}: dimension {emb.shape[1]}, manifest says {manifest.dimension}")
    if not np.issubdtype(emb.dtype, np.floating):
        raise BundleError(f"{embeddings_path}: {emb.dtype} rows, expected floating point")
    check_finite_rows(emb, embeddings_path)
    return LoadedBundle(manifest=manifest, corpus=corpus, embeddings=np.ascontiguousarray(emb, dtype=np.float32),
                        model_dir=model_dir, premises_dir=premises_dir)


def check_bundle(bundle: Path) -> Manifest:
    """The bundle's manifest, once the bundle holds exactly the files it lists, each inside the bundle and
    of its listed size (cheap: nothing is hashed or read)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle dir (write one with `leanpremise export`)")
    manifest = Manifest.read(bundle)
    check_inventory(bundle, manifest)
    for path in (bundle / PREMISES_ARCHIVE, bundle / MODEL_DIR):
        if not path.exists():
            raise BundleError(f"{path}: missing from the bundle")
    return manifest


def load_bundle(bundle: Path, cache_dir: Path | None = None, verify: bool = True, fast: bool = False,
                limits: ArchiveLimits | None = None) -> LoadedBundle:
    """The bundle, its files checked against the manifest: all hashed, or (`fast`) large ones by size only;
    `verify=False` keeps only the cheap checks of :func:`check_bundle`."""
    bundle = Path(bundle)
    manifest = check_bundle(bundle)
    archive, emb = bundle / PREMISES_ARCHIVE, bundle / manifest.embeddings
    full = verify and not fast
    if verify:  # the embeddings are hashed as they are read (assemble)
        verify_bundle_files(bundle, manifest, fast, skip=frozenset({manifest.embeddings}) if full else frozenset())
    else:
        logger.warning("%s: checksums not verified (VERIFY_CHECKSUMS=false)", bundle)
    archive_sha = manifest.checksums[PREMISES_ARCHIVE] if full else None
    emb_sha = manifest.checksums[manifest.embeddings] if full else None
    loaded = assemble(manifest, archive, emb, bundle / MODEL_DIR, cache_dir, archive_sha, limits, emb_sha)
    loaded.root = bundle
    return loaded


def parse_repo_at(spec: str) -> tuple[str, str | None]:
    """`owner/name@revision` -> (repo, revision); no `@` means the default branch."""
    repo, _, rev = spec.partition("@")
    if not repo or "/" not in repo:
        raise BundleError(f"{spec!r}: expected OWNER/NAME@REVISION")
    return repo, rev or None


_COMMIT = re.compile(r"[0-9a-f]{40}")


def snapshot_commit(path: Path, rel: str) -> str:
    """The commit a Hub download at `path` (`.../snapshots/<commit>/<rel>`) came from."""
    root = Path(path)
    for _ in PurePosixPath(rel).parts:
        root = root.parent
    if not _COMMIT.fullmatch(root.name):
        raise BundleError(f"{path}: not in a Hub snapshot folder; cannot tell which commit it is")
    return root.name


def load_from_hub(data_repo: str, data_revision: str | None, model_id: str, model_revision: str | None,
                  cache_dir: Path | None = None, verify: bool = True, fast: bool = False,
                  limits: ArchiveLimits | None = None, allow_unverified: bool = False) -> LoadedBundle:
    """Download premises.tar.gz, the embeddings and the model, as the original server's startup did.

    A data repo without a manifest (as the original upload script published them) cannot be checked, and is
    refused unless `allow_unverified` (the operator's ALLOW_UNVERIFIED_HUB) says to serve it anyway.

    Each repository's revision (a branch, a tag, or none: the default branch) is resolved to a commit by
    the first download, logged, and every later file is fetched at that commit, so the files cannot come
    from two pushes. With a manifest, every downloaded file (the model's too) is checked against it."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    hub_cache = cache_dir / "hub"
    step = f"download {PREMISES_ARCHIVE} from {data_repo}@{data_revision}"
    try:
        archive = Path(hf_hub_download(data_repo, PREMISES_ARCHIVE, repo_type="dataset", revision=data_revision,
                                       cache_dir=hub_cache))
        data_commit = snapshot_commit(archive, PREMISES_ARCHIVE)
        logger.info("data: %s@%s is commit %s", data_repo, data_revision or "(default branch)", data_commit)
        try:
            manifest = Manifest.read(Path(hf_hub_download(data_repo, MANIFEST, repo_type="dataset",
                                                          revision=data_commit, cache_dir=hub_cache)).parent)
        except EntryNotFoundError:  # data repos published by the original script have no manifest
            if not allow_unverified:  # refused before the large downloads
                raise BundleError(f"{data_repo}@{data_commit} has no {MANIFEST} listing its files, so its "
                                  "downloads cannot be verified; serve it only with --allow_unverified_hub "
                                  "(ALLOW_UNVERIFIED_HUB=true)") from None
            manifest = Manifest(model_name=model_id.split("/")[-1], revision=model_revision or "", dimension=0,
                                premise_count=0, unfiltered_premise_count=0, module_count=0,
                                embeddings=embeddings_file_name(model_id.split("/")[-1], model_revision or ""))
        step = f"download {manifest.embeddings} from {data_repo}@{data_commit}"
        emb = Path(hf_hub_download(data_repo, manifest.embeddings, repo_type="dataset", revision=data_commit,
                                   cache_dir=hub_cache))
        step = f"download the model {model_id}@{model_revision}"
        model_files = {rel.removeprefix(f"{MODEL_DIR}/"): rel for rel in manifest.checksums
                       if rel.startswith(f"{MODEL_DIR}/")}
        model_dir = Path(snapshot_download(model_id, revision=model_revision, cache_dir=hub_cache,
                                           allow_patterns=sorted(model_files) or None))
        logger.info("model: %s@%s is commit %s", model_id, model_revision or "(default branch)", model_dir.name)
    except BundleError:
        raise
    except Exception as e:  # one readable message for every network/hub failure
        raise BundleError(f"could not {step} (Hub endpoint {constants.ENDPOINT}): {type(e).__name__}: {e}") from e
    archive_sha = emb_sha = None
    if not manifest.checksums and not allow_unverified:
        raise BundleError(f"{data_repo}@{data_commit} has no {MANIFEST} listing its files, so its downloads "
                          "cannot be verified; serve it only with --allow_unverified_hub (ALLOW_UNVERIFIED_HUB=true)")
    if not manifest.checksums:
        logger.warning("%s@%s has no %s listing its files: the downloads cannot be verified (a repo published "
                       "by the original upload script)", data_repo, data_commit, MANIFEST)
    elif verify:
        downloads = {PREMISES_ARCHIVE: archive, manifest.embeddings: emb}
        downloads.update({rel: model_dir / name for name, rel in model_files.items()})
        for rel, path in sorted(downloads.items()):
            if fast or rel != manifest.embeddings:  # else hashed as it is read (assemble)
                verify_file(path, rel, manifest, fast)
        logger.info("verified %d downloaded files against %s", len(downloads), MANIFEST)
        archive_sha = None if fast else manifest.checksums[PREMISES_ARCHIVE]
        emb_sha = None if fast else manifest.checksums[manifest.embeddings]
    return assemble(manifest, archive, emb, model_dir, cache_dir, archive_sha, limits, emb_sha)
