"""Outcome symbols of the LeanHammer tactic benchmark and how they are read from its output.

`lake exe tactic_benchmark` prints a line starting with a run of symbols: `✅️` (solved), `❌️`
(failed), `💥️` (error), optionally followed by a parenthesised reason (`💥️(subgoals)`). Six-symbol runs
(`✅️✅️✅️💥️❌️❌️`) say at which stage of the hammer pipeline the proof attempt stopped. The harness adds
`⏰` (our per-theorem timeout) and recognises `❤️` (Lean's deterministic timeout). No symbol at all (for
instance `unknown constant` for a `@[simps]`-generated name) means the theorem was "not tested".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VS16 = "\ufe0f"  # the emoji variation selector the Lean program prints after each symbol
SOLVED = "✅️"
FAILED = "❌️"
ERROR = "💥️"
TIMEOUT = "⏰"
DETERMINISTIC_TIMEOUT = "❤️"
NOT_TESTED = "not tested"

_BASE_SYMBOLS = "✅❌💥"
_RUN = re.compile(rf"^([{_BASE_SYMBOLS}{VS16}]+)(\([^)\n]*\))?(?=[\s(]|$)", re.MULTILINE)

TIMEOUT_MARKERS = ("TimeoutExpired", "timed out after")
"""Text our harness (and the original's) writes for a per-theorem timeout."""
DETERMINISTIC_TIMEOUT_MARKER = "(deterministic) timeout"

HAMMER_STAGES = ("premise lookup", "preprocessing", "TPTP translation", "Zipperposition",
                 "reconstruction", "proof fitting")
"""The six stages a six-symbol run reports, in order (the first non-✅ marks where the pipeline stopped)."""

LABELS: dict[str, str] = {
    "✅️": "Solved",
    "✅️(success)": "Solved",
    "✅️✅️✅️✅️✅️✅️": "Solved (hammer)",
    "✅️✅️✅️✅️✅️💥️": "Proof fit error",
    "✅️✅️✅️✅️💥️❌️": "Reconstruction error",
    "✅️✅️✅️💥️❌️❌️": "Zipperposition fail",
    "✅️✅️💥️❌️❌️❌️": "TPTP error",
    "✅️💥️❌️❌️❌️❌️": "Preprocessing error",
    "💥️❌️❌️❌️❌️❌️": "No premises (noJSON)",
    "💥️💥️💥️💥️💥️💥️": "Uncaught error",
    "❌️": "Failed",
    "❌️(failure)": "Failed",
    "💥️": "Uncaught error",
    TIMEOUT: "Uncaught timeout",
    DETERMINISTIC_TIMEOUT: "Deterministic timeout",
    NOT_TESTED: "N/A",
}


def canonical(symbols: str) -> str:
    """Give every ✅/❌/💥 exactly one variation selector, so `✅` and `✅️` count as the same outcome."""
    head, paren, reason = symbols.partition("(")
    bare = head.replace(VS16, "")
    return "".join(ch + VS16 if ch in _BASE_SYMBOLS else ch for ch in bare) + paren + reason


def outcome_from_output(output: str) -> str:
    """The outcome of one benchmark run from its (filtered) output text."""
    match = _RUN.search(output or "")
    if match and match.group(1).replace(VS16, ""):
        return canonical(match.group(1) + (match.group(2) or ""))
    if any(marker in (output or "") for marker in TIMEOUT_MARKERS):
        return TIMEOUT
    if DETERMINISTIC_TIMEOUT_MARKER in (output or ""):
        return DETERMINISTIC_TIMEOUT
    return NOT_TESTED  # e.g. `unknown constant`: the declaration is not a theorem we can run on


def outcome_of_entry(entry: Mapping) -> str:
    """The recorded outcome of a results-file entry, re-parsing the output only when none was recorded."""
    emoji = entry.get("result_emoji")
    if isinstance(emoji, str) and emoji:
        return emoji if emoji in (TIMEOUT, DETERMINISTIC_TIMEOUT, NOT_TESTED) else canonical(emoji)
    output = entry.get("result_output")
    return outcome_from_output(output if isinstance(output, str) else "")


def is_solved(outcome: str) -> bool:
    """✅️, ✅️(success) and the all-✅️ six-symbol run count as solved; any other reason does not."""
    bare = outcome.replace(VS16, "")
    symbols, _, reason = bare.partition("(")
    return bool(symbols) and set(symbols) == {"✅"} and reason in ("", "success)")


def label(outcome: str) -> str:
    """A readable name for an outcome (plots cannot rely on an emoji font)."""
    if outcome in LABELS:
        return LABELS[outcome]
    bare = outcome.replace(VS16, "")
    symbols, paren, reason = bare.partition("(")
    if paren and set(symbols) <= set(_BASE_SYMBOLS):
        kind = {"✅": "Solved", "❌": "Failed", "💥": "Error"}[symbols[-1]] if symbols else "Error"
        return f"{kind}: {reason.rstrip(')')}"
    if len(symbols) == len(HAMMER_STAGES) and set(symbols) <= set(_BASE_SYMBOLS):
        stopped = next((i for i, ch in enumerate(symbols) if ch != "✅"), None)
        if stopped is not None:
            return f"Stopped at {HAMMER_STAGES[stopped]}"
    return outcome
