"""The rankers beside the dense model, and how fusions and rerankers name them.

`retrieve --hybrid` names them bm25 / mepo / usage; `fuse` by their files (`mepo-p0.6-c2.4`), and any other name
is the dense model."""

from __future__ import annotations

import re

from leanpremise.rank.kinds import RankerKind

LEXICAL = (RankerKind.BM25, RankerKind.MEPO, RankerKind.USAGE)
"""The rankers fused beside the dense model, in this order: BM25 and MePo read the texts, usage ranks by
how often training proofs used a premise (eval/usage.py). The server runs them in its lexical threads."""


MEPO_FILE_NAME = re.compile(r"^mepo-p(\d+(?:\.\d+)?)-c(\d+(?:\.\d+)?)$")
"""How `baseline mepo` names its files (MePoConfig.label), so `fuse` calls that ranker."""


def side_ranker(name: str):
    """(kind in LEXICAL, MePoConfig or None) for a fusion's ranker name, or None for a dense ranker:
    `retrieve --hybrid` names them bm25 / mepo / usage, `fuse` by their files (`mepo-p0.6-c2.4`)."""
    from leanpremise.rank.mepo import MePoConfig

    if name in LEXICAL:
        return name, MePoConfig() if name == RankerKind.MEPO else None
    m = MEPO_FILE_NAME.match(name)
    if m:
        return RankerKind.MEPO, MePoConfig(p=float(m.group(1)), c=float(m.group(2)))
    return None


def side_rankers(names: list[str]) -> tuple[dict[str, str], object, str | None]:
    """({kind: name} of the side rankers among `names`, MePo's config, the dense ranker's name or None):
    what a bundle can serve. ValueError when two names are the same kind (a fusion runs each side ranker
    once) or more than one is dense (a bundle has one model)."""
    kinds: dict[str, str] = {}
    mepo_config, dense = None, []
    for name in names:
        side = side_ranker(name)
        if side is None:
            dense.append(name)
            continue
        kind, config = side
        if kind in kinds:
            raise ValueError(f"rankers {kinds[kind]!r} and {name!r} are both {kind}")
        kinds[kind] = name
        mepo_config = config if kind == RankerKind.MEPO else mepo_config
    if len(dense) > 1:
        raise ValueError(f"{dense} are not lexical rankers ({', '.join(LEXICAL)}); a bundle has one dense model")
    return kinds, mepo_config, dense[0] if dense else None


def parse_rankers(text: str) -> list[str]:
    """`bm25,mepo` -> ["bm25", "mepo"]; any non-empty subset of LEXICAL, each once."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in LEXICAL]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"--hybrid {text!r}: expected a comma-separated subset of {', '.join(LEXICAL)}")
    return [n for n in LEXICAL if n in names]
