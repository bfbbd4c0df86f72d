"""LightGBM model files crafted as an attacker who writes a bundle would: each parses, and each would hang or
crash LightGBM if it were handed over unchecked (issue 28, point 5). `tree_sizes` is recomputed after an
edit, as a careful attacker would, so only the edit itself is wrong (except in "wrong tree_sizes")."""

from __future__ import annotations

import re

CRAFTS = ["self-loop", "out-of-range child", "out-of-range feature", "wrong tree_sizes", "truncated"]


def _split(text: str) -> tuple[str, list[str], str]:
    first = text.index("\nTree=") + 1
    end = text.index("\nend of trees\n") + 1
    blocks = re.split(r"(?=^Tree=)", text[first:end], flags=re.MULTILINE)
    return text[:first], [b for b in blocks if b], text[end:]


def _join(header: str, blocks: list[str], tail: str) -> str:
    sizes = " ".join(str(len(b.encode())) for b in blocks)
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", header, flags=re.MULTILINE) + "".join(blocks) + tail


def _edit_first(block: str, key: str, value: str) -> str:
    """`key`'s first value in a tree block set to `value`."""
    line = re.search(rf"^{key}=(.*)$", block, flags=re.MULTILINE)
    values = line.group(1).split(" ")
    values[0] = value
    return block[:line.start(1)] + " ".join(values) + block[line.end(1):]


def craft(text: str, how: str, n_features: int) -> str:
    """`text` (a LightGBM model with a split in its first tree) made hostile as `how` (one of CRAFTS)."""
    header, blocks, tail = _split(text)
    i = next(j for j, b in enumerate(blocks) if re.search(r"^num_leaves=([2-9]|\d\d)", b, flags=re.MULTILINE))
    if how == "self-loop":
        blocks[i] = _edit_first(blocks[i], "left_child", "0")
    elif how == "out-of-range child":
        blocks[i] = _edit_first(blocks[i], "left_child", "99999")
    elif how == "out-of-range feature":
        blocks[i] = _edit_first(blocks[i], "split_feature", str(n_features + 7))
    elif how == "wrong tree_sizes":
        sizes = [len(b.encode()) for b in blocks]
        sizes[0] += 1
        sizes[-1] -= 1
        return re.sub(r"^tree_sizes=.*$", "tree_sizes=" + " ".join(map(str, sizes)), header,
                      flags=re.MULTILINE) + "".join(blocks) + tail
    elif how == "truncated":
        return text[: len(text) // 2]
    else:
        raise ValueError(how)
    return _join(header, blocks, tail)


def reseal(text: str) -> str:
    """`text` with its `tree_sizes` recomputed from its trees (after an edit inside one)."""
    return _join(*_split(text))
