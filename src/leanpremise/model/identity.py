"""What a model's embeddings depend on, as one digest: the key of reusable embeddings.

An export run re-saves the model it embeds with, so file names, paths and modification times change on
every run while the embeddings do not; the identity is therefore made from content only: the weight files'
bytes, the tokenizer files, the module configs (pooling, normalisation, maximum sequence length, prompts)
and the architecture config. Left out: the model card (prose), the ONNX graphs (derived from the rest) and
provenance keys that a save rewrites (library versions, where the model was loaded from).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

IDENTITY_VERSION = b"leanpremise-model-identity-1\n"
"""Mixed into every identity; bump it when what goes in changes, so old keys stop matching."""
IGNORED_FILES = frozenset({"README.md"})
IGNORED_DIRS = frozenset({"onnx"})
PROVENANCE_KEYS = frozenset({"__version__", "transformers_version", "_name_or_path", "name_or_path", "is_local",
                             "local_files_only", "_commit_hash"})
"""Top-level JSON keys that record how a model was saved, not how it embeds."""


def model_identity(model_dir: Path) -> str:
    """sha256 hex digest of the content of a sentence-transformers model dir that decides its embeddings.

    Two saves of one model give the same identity wherever they live; any change of weights, tokenizer,
    pooling, normalisation, prompts or maximum length gives another."""
    root = Path(model_dir)
    h = hashlib.sha256(IDENTITY_VERSION)
    for path in _identity_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(_content_digest(path))
    return h.hexdigest()


def _identity_files(root: Path) -> list[Path]:
    """The files that go into the identity, in a fixed order (hidden files and ignored ones left out)."""
    out = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if not path.is_file() or parts[0] in IGNORED_DIRS or path.name in IGNORED_FILES:
            continue
        if any(part.startswith(".") for part in parts):
            continue
        out.append(path)
    return out


def _content_digest(path: Path) -> bytes:
    """A JSON object's canonical form without provenance keys, hashed; any other file's bytes, hashed."""
    h = hashlib.sha256()
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            kept = {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}
            h.update(json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
            return h.digest()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.digest()
