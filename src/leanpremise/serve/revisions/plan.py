"""Which bundles a server serves, under which tags, and which one `/` serves.

The bundle list comes from the command line (or BUNDLE_DIR): each entry is a bundle dir, or a directory
whose sub-directories holding a manifest are bundles (hidden ones skipped, so a bundle being copied in
under a dot-name is not picked up half-written). It is re-read on every reload.

A bundle's tag is its Lean version when the data revision names one (`lean4:v4.33.0` or a bare `v4.33.0`),
else the revision slug; `--tag B=NAME` names it instead. The default revision is `--default TAG`, else the
newest: the highest Lean version, then the latest manifest `created`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from leanpremise.bundle.layout import MANIFEST, BundleError, revision_slug
from leanpremise.bundle.manifest import Manifest

LEAN_VERSION = re.compile(r"(?:^|[\s@:/])(?:lean4?[:@/ ]?)?v(\d+)\.(\d+)\.(\d+)(?:-rc(\d+))?(?=$|[\s,;)+])",
                          re.IGNORECASE)
"""`lean4:v4.33.0`, `lean4@v4.33.0-rc1`, or a revision that is just `v4.33.0`."""
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_TAGS = frozenset({"retrieve", "indexed-premises", "indexed-modules", "max-new-premises", "health",
                           "metrics", "revisions", "admin", "docs", "redoc", "openapi.json"})
"""First path segments the server's own routes take: a tag cannot be one of them."""


@dataclass(frozen=True)
class BundleSpec:
    """One bundle to serve: where it is, its manifest (read cheaply), and the tag it is served under."""

    path: Path | None
    """None for a bundle downloaded from the Hub."""
    manifest: Manifest | None
    tag: str

    def same_bundle(self, other: BundleSpec) -> bool:
        """Unchanged since `other` was loaded: same place, same files (a re-export changes checksums)."""
        return (self.path == other.path and self.manifest is not None and other.manifest is not None
                and self.manifest.checksums == other.manifest.checksums
                and self.manifest.created == other.manifest.created)


def lean_version(revision: str) -> tuple[int, int, int, float] | None:
    """(major, minor, patch, rc) of the Lean version a data revision names; a release sorts after its rcs."""
    m = LEAN_VERSION.search(revision or "")
    if m is None:
        return None
    major, minor, patch, rc = m.groups()
    return int(major), int(minor), int(patch), float(rc) if rc is not None else float("inf")


def derived_tag(manifest: Manifest) -> str:
    """`v4.33.0` (or `v4.33.0-rc1`) when the data revision names a Lean version, else the revision slug."""
    m = LEAN_VERSION.search(manifest.data_revision or "") or LEAN_VERSION.search(manifest.revision or "")
    if m is not None:
        major, minor, patch, rc = m.groups()
        return f"v{major}.{minor}.{patch}" + (f"-rc{rc}" if rc is not None else "")
    return revision_slug(manifest.data_revision or manifest.revision)[:64]


def check_tag(tag: str, where: str) -> str:
    if not TAG.fullmatch(tag) or tag.lower() in RESERVED_TAGS:
        raise BundleError(f"{where}: {tag!r} cannot be a revision tag (letters, digits, `.`, `_`, `-`, "
                          f"at most 64, and none of {', '.join(sorted(RESERVED_TAGS))})")
    return tag


def parse_tag_options(options: list[str]) -> dict[str, str]:
    """`--tag B=NAME` options -> {B: NAME} (B: a bundle path, or the tag the bundle would get)."""
    out = {}
    for opt in options:
        bundle, sep, name = opt.rpartition("=")
        if not sep or not bundle or not name:
            raise BundleError(f"--tag {opt!r}: expected BUNDLE=NAME")
        out[bundle] = check_tag(name, f"--tag {opt}")
    return out


def bundle_dirs(entries: list[Path]) -> list[Path]:
    """The bundles the entries name: a bundle dir itself, or the bundle sub-directories of a directory."""
    out: list[Path] = []
    for entry in entries:
        entry = Path(entry)
        if (entry / MANIFEST).is_file() or not entry.is_dir():
            out.append(entry)  # a missing dir is reported by check_bundle, naming it
            continue
        found = sorted(p for p in entry.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and (p / MANIFEST).is_file())
        out.extend(found or [entry])  # neither: check_bundle says its manifest is missing
    return out


def assign_tags(bundles: list[tuple[Path, Manifest]], tag_options: dict[str, str]) -> list[BundleSpec]:
    """A tag per bundle: `--tag` names first (a clash is an error), then derived tags, a derived tag taken
    already getting `-2`, `-3`, ... in the order the bundles were listed."""
    named: dict[int, str] = {}
    for i, (path, manifest) in enumerate(bundles):
        for key in (str(path), str(path.resolve()), path.name, derived_tag(manifest)):
            if key in tag_options:
                named[i] = tag_options[key]
                break
    taken: dict[str, Path] = {}
    for i, tag in named.items():
        if tag in taken:
            raise BundleError(f"--tag: {tag!r} given to both {taken[tag]} and {bundles[i][0]}")
        taken[tag] = bundles[i][0]
    specs = []
    for i, (path, manifest) in enumerate(bundles):
        tag = named.get(i)
        if tag is None:
            base = check_tag(derived_tag(manifest), f"{path / MANIFEST} data_revision")
            tag, n = base, 2
            while tag in taken:
                tag, n = f"{base}-{n}", n + 1
            taken[tag] = path
        specs.append(BundleSpec(path=path, manifest=manifest, tag=tag))
    return specs


def newest(specs: list[BundleSpec]) -> str:
    """The tag of the newest bundle: highest Lean version (bundles naming none rank below), then the
    latest `created`, then the last listed."""
    def key(item):
        i, spec = item
        m = spec.manifest
        version = lean_version(m.data_revision or m.revision) if m is not None else None
        return (version is not None, version or (), (m.created if m is not None else ""), i)

    return max(enumerate(specs), key=key)[1].tag


def default_tag(specs: list[BundleSpec], wanted: str | None) -> str:
    if wanted is None:
        return newest(specs)
    if wanted not in {s.tag for s in specs}:
        raise BundleError(f"--default {wanted!r}: no such revision (serving {', '.join(s.tag for s in specs)})")
    return wanted


def plan_revisions(config) -> tuple[list[BundleSpec], str]:
    """(the bundles the settings name, each checked cheaply and tagged; the default tag). Re-run on reload."""
    from leanpremise.serve.revisions.loader import check_bundle

    entries = [config.bundle, *config.bundles] if config.bundle is not None else list(config.bundles)
    bundles = [(path, check_bundle(path)) for path in bundle_dirs(entries)]
    specs = assign_tags(bundles, parse_tag_options(config.tags))
    return specs, default_tag(specs, config.default_revision)
