"""Publish a bundle to the Hugging Face Hub, as the original upload script did.

The model goes to a model repository and `premises.tar.gz` plus the
embeddings (and the manifest) to a dataset repository, each on branch
`<revision>` (the Lean/Mathlib version), which is what `serve --from_hub`
and the original server download.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leanpremise.bundle.layout import EMBEDDINGS_DIR, MANIFEST, MODEL_DIR, PREMISES_ARCHIVE
from leanpremise.bundle.manifest import Manifest

logger = logging.getLogger(__name__)

DATA_PATTERNS = [PREMISES_ARCHIVE, f"{EMBEDDINGS_DIR}/*.npy", MANIFEST]


class PublishError(RuntimeError):
    pass


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _explain(e: Exception, repo: str, step: str) -> PublishError:
    """One clear sentence instead of a stack of httpx/huggingface_hub errors."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    endpoint = _endpoint()
    if isinstance(e, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set; unset it to publish"
    elif isinstance(e, LocalTokenNotFoundError):
        why = "no Hugging Face token: run `hf auth login` or set HF_TOKEN"
    elif isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        why = f"the Hub answered HTTP {status} ({str(e).splitlines()[0]}); check the repo name and HF_TOKEN's write access"
    else:
        why = (f"could not reach the Hub at {endpoint} ({type(e).__name__}: {e}); check the network, "
               "or HF_ENDPOINT if you use a mirror")
    return PublishError(f"publishing to {repo} failed while trying to {step}: {why}")


def _push_folder(api, repo: str, repo_type: str, folder: Path, revision: str, patterns: list[str] | None,
                 message: str) -> str:
    step = "create the repository"
    try:
        api.create_repo(repo, repo_type=repo_type, exist_ok=True)
        step = f"create branch {revision}"
        api.create_branch(repo, branch=revision, repo_type=repo_type, exist_ok=True)
        step = f"upload {folder}"
        info = api.upload_folder(repo_id=repo, repo_type=repo_type, folder_path=str(folder), revision=revision,
                                 allow_patterns=patterns, commit_message=message)
    except Exception as e:  # every failure becomes one readable message
        raise _explain(e, repo, step) from e
    return str(getattr(info, "commit_url", info))


def publish_bundle(bundle: Path, model_repo: str, data_repo: str) -> dict[str, str]:
    """Push the model and the data of `bundle`; returns the commit URLs (the token is huggingface_hub's:
    HF_TOKEN or `hf auth login`)."""
    from huggingface_hub import HfApi

    bundle = Path(bundle)
    manifest = Manifest.read(bundle)
    revision = manifest.revision
    if not revision:
        raise PublishError(f"{bundle / MANIFEST}: no revision; cannot choose the branch to push to")
    api = HfApi(endpoint=_endpoint())
    logger.info("pushing %s to %s@%s and %s to %s@%s", MODEL_DIR, model_repo, revision,
                PREMISES_ARCHIVE, data_repo, revision)
    model_url = _push_folder(api, model_repo, "model", bundle / MODEL_DIR, revision, None,
                             f"{manifest.model_name} for {revision}")
    data_url = _push_folder(api, data_repo, "dataset", bundle, revision, DATA_PATTERNS,
                            f"premises and {manifest.model_name} embeddings for {revision}")
    return {"model": model_url, "data": data_url}
