"""Derive a SYNTHETIC next revision of an ntp-toolkit extraction, for tests and the revision benchmark.

It imitates what a month of Mathlib does to an extraction; it is not a real Mathlib release. The changes,
each drawn with a seeded RNG so the output is deterministic for a seed:

- renames: a declaration gets a new name, and every reference to it follows (declaration texts, proof
  states, premise lists of TrainingDataWithPremises, HammerBlacklist); `foo.mp` follows `foo`;
- statement edits: a declaration's type (or arguments) change, so its embedded text changes;
- deleted declarations: gone from Declarations, from every premise list, with their own proof states;
- added declarations: variants of a declaration of the module, appended at the module's end;
- moved declarations: to a module the old one imports directly (so every user still sees them); their proof
  states are dropped, since rebuilding the new file's source text is beyond an imitation;
- deleted modules: leaf modules (nobody imports them), with all their files;
- added modules: a new sibling of an existing module, importing it, with a few new declarations.

Declaration-level shares are fractions of the premises in the filtered corpus (the one the server indexes);
module-level shares are fractions of the listed modules. Only declarations in that corpus, with a unique name,
are chosen, and new names stay in it, so the corpus size changes by exactly what the summary says.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from leanpremise.atomic import atomic_write_bytes
from leanpremise.data.corpus import declaration_kept, module_kept, premise_text
from leanpremise.data.jsonl import BadLines, iter_jsonl
from leanpremise.data.parse import read_blacklist, read_revision
from leanpremise.data.states import parse_recommendation

SUMMARY_NAME = "synthetic_revision.json"
"""The summary written next to the extraction's files (the data layer ignores it)."""

IDENT = re.compile(r"[^\W\d][\w'!?]*(?:\.[\w'!?]+)*")
"""A Lean identifier as written in source text (dotted; `«quoted»` names are left alone)."""

RENAME_SUFFIXES = ("'", "_iff", "_eq", "_of_ne", "_left", "_right", "₀", "_apply")
ADDED_SUFFIXES = ("_comm", "_symm", "_of_le", "_self", "_zero", "_one", "_mono", "_inj")
MODULE_STEMS = ("Lemmas", "Defs", "Order", "Basic", "Instances", "Prod", "Pi", "Hom")
REC_FIELDS = ("declHammerRecommendation", "nextTacticHammerRecommendation")
TEXT_FIELDS = ("state", "srcUpToTactic", "declUpToTactic", "nextTactic")


@dataclass(frozen=True)
class Shares:
    """How much changes; declaration shares are of corpus premises, module shares of listed modules."""

    rename: float = 0.01
    edit: float = 0.01
    delete_decl: float = 0.004
    add_decl: float = 0.01
    move: float = 0.004
    delete_module: float = 0.003
    add_module: float = 0.003
    decls_per_added_module: int = 6


def _read_jsonl(path: Path) -> list[dict]:
    """Every well-formed line of a JSONL file, read as the data layer reads it (malformed lines skipped);
    none for a missing file."""
    return [obj for _, obj in iter_jsonl(path, BadLines())] if path.exists() else []


def _dumps_lines(rows: Iterable[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


class _Source:
    """The parts of an extraction the plan needs: modules, imports and every declaration."""

    def __init__(self, src: Path):
        self.dir = src
        self.modules = [m["name"] for m in _read_jsonl(src / "Modules.jsonl")]
        self.blacklist_list = read_blacklist(src)
        self.blacklist = set(self.blacklist_list)
        self.revision = read_revision(src)
        self.imports = {m: _read_jsonl(src / "Imports" / f"{m}.jsonl") for m in self.modules}
        self.decls = {m: _read_jsonl(src / "Declarations" / f"{m}.jsonl") for m in self.modules}
        self.imported_by_any = {i["name"] for rows in self.imports.values() for i in rows}
        counts: dict[str, int] = {}
        for rows in self.decls.values():
            for d in rows:
                counts[d["name"]] = counts.get(d["name"], 0) + 1
        self.all_names = set(counts)
        self.unique = {n for n, c in counts.items() if c == 1}
        prefixes = {n.rsplit(".", 1)[0] for n in self.all_names if "." in n}
        self.namespaces = prefixes

    def in_corpus(self, module: str, d: dict) -> bool:
        """Whether the data layer's default filters keep declaration `d` of `module`."""
        return module_kept(module) and declaration_kept(d["name"], d["type"], self.blacklist)

    def corpus_size(self) -> int:
        """Premises the data layer's default filters keep (first occurrence of a name wins)."""
        seen: set[str] = set()
        for m in self.modules:
            for d in self.decls[m]:
                if self.in_corpus(m, d):
                    seen.add(d["name"])
        return len(seen)


def _edit_statement(d: dict, rng: random.Random) -> dict:
    """The same declaration with a changed statement: sides swapped, or a new hypothesis."""
    d = dict(d)
    t = d["type"]
    for rel in (" = ", " ↔ "):
        if t.count(rel) == 1 and rng.random() < 0.7:
            lhs, rhs = t.split(rel)
            d["type"] = f"{rhs}{rel}{lhs}"
            break
    else:
        d["args"] = [*d["args"], rng.choice(["[Nontrivial α]", "(hn : n ≠ 0)", "(h : 0 < n)", "[DecidableEq α]"])]
    args = " ".join(d["args"])
    doc = f"/-- {d['doc'].strip()} -/\n" if d.get("doc") else ""
    d["decl"] = f"{doc}{d['kind']} {d['name']}{' ' + args if args else ''} : {d['type']}"
    return d


def _fresh_name(base: str, suffixes: tuple[str, ...], taken: set[str], rng: random.Random) -> str:
    """A name derived from `base` the way Mathlib names variants, not yet taken (and then reserved)."""
    for suffix in rng.sample(suffixes, len(suffixes)):
        name = base[:-1] if suffix == "'" and base.endswith("'") else base + suffix
        if name not in taken:
            taken.add(name)
            return name
    k = 2
    while f"{base}_{k}" in taken:
        k += 1
    taken.add(f"{base}_{k}")
    return f"{base}_{k}"


class _Renamer:
    """Renames identifiers in text, following dotted projections (`foo.mp` when `foo` is renamed)."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        self._pattern = self.pattern(mapping)

    @staticmethod
    def pattern(names: Iterable[str]) -> re.Pattern | None:
        """Whole identifiers (or their dotted heads) among `names`; None for no names."""
        names = sorted(names, key=lambda n: (-len(n), n))
        if not names:
            return None
        return re.compile(r"(?<![\w'!?.])(?:" + "|".join(map(re.escape, names)) + r")(?![\w'!?])")

    def token(self, tok: str) -> str:
        if tok in self.mapping:
            return self.mapping[tok]
        head = tok
        while "." in head:
            head, _, _ = head.rpartition(".")
            if head in self.mapping:
                return self.mapping[head] + tok[len(head):]
        return tok

    def present(self, tokens: set[str]) -> set[str]:
        """The renamed names that `tokens` (identifiers of a text) use."""
        found = set()
        for tok in tokens:
            head = tok
            while True:
                if head in self.mapping:
                    found.add(head)
                if "." not in head:
                    break
                head = head.rpartition(".")[0]
        return found

    def text(self, s: str, pattern: re.Pattern | None = None) -> str:
        pattern = pattern or self._pattern
        return pattern.sub(lambda m: self.mapping[m.group()], s) if pattern else s


def synthesize(src: Path, out: Path, seed: int = 0, shares: Shares = Shares(), revision: str | None = None) -> dict:
    """Write revision N+1 of the extraction `src` to the new directory `out`; return the summary."""
    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: the output directory exists and is not empty")
    c = _Changes(_Source(src), random.Random(seed), shares)
    # Modules first, so no declaration change lands in a deleted module; the order of the steps is the
    # order in which they draw from the RNG.
    c.delete_modules()
    c.pick_declarations()
    c.copy_declarations()
    c.rename()
    c.edit()
    c.move()
    c.drop_deleted_and_moved()
    c.add_declarations()
    c.add_modules()
    out.mkdir(parents=True, exist_ok=True)
    new_revision = revision or f"{c.s.revision}+synthetic.{seed}"
    _write_outputs(c.s, out, c.live, c.decls, c.new_modules, c.renamer, c.deleted_names | set(c.moved),
                   c.deleted_names, new_revision)
    summary = c.summary(src, out, seed, new_revision)
    atomic_write_bytes(out / SUMMARY_NAME, json.dumps(summary, indent=1, ensure_ascii=False).encode())
    return summary


class _Changes:
    """The changes from one extraction to its synthetic next revision, drawn step by step from one RNG."""

    def __init__(self, s: _Source, rng: random.Random, shares: Shares):
        self.s, self.rng, self.shares = s, rng, shares
        self.n_premises = s.corpus_size()
        self.n_modules = len(s.modules)
        self.taken = set(s.all_names)
        self.added: list[str] = []
        self.in_new_modules: list[str] = []
        self.new_modules: dict[str, tuple[list[dict], list[dict]]] = {}

    def count(self, share: float, base: int) -> int:
        return round(share * base)

    def delete_modules(self) -> None:
        """Leaf modules (nobody imports them) whose declarations all have unique names."""
        s = self.s
        sizes = {m: sum(s.in_corpus(m, d) for d in s.decls[m]) for m in s.modules}
        leaf = [m for m in s.modules if m not in s.imported_by_any and sizes[m] > 0
                and all(d["name"] in s.unique for d in s.decls[m])]
        # The smaller half of the leaves first, so one deletion stays small; larger ones only if too few.
        self.rng.shuffle(leaf)
        median = sorted(sizes[m] for m in leaf)[len(leaf) // 2] if leaf else 0
        leaf.sort(key=lambda m: sizes[m] > median)
        want = min(len(leaf), self.count(self.shares.delete_module, self.n_modules))
        self.deleted_modules = sorted(leaf[:want])
        gone = set(self.deleted_modules)
        self.live = [m for m in s.modules if m not in gone]

    def pick_declarations(self) -> None:
        """Disjoint (module, row) picks for each declaration-level change, from one shuffled pool."""
        s = self.s
        pool = [(m, i) for m in self.live for i, d in enumerate(s.decls[m])
                if s.in_corpus(m, d) and d["name"] in s.unique]
        self.rng.shuffle(pool)
        gone = set(self.deleted_modules)
        self.targets = {m: _move_targets(s, m, gone) for m in self.live}
        eligible = {
            "delete_decl": lambda m, i: True,
            "rename": lambda m, i: s.decls[m][i]["name"] not in s.namespaces,  # no `name.x` would follow it
            "edit": lambda m, i: True,
            "move": lambda m, i: bool(self.targets[m]),
        }
        self.picks: dict[str, list[tuple[str, int]]] = {}
        for kind, ok in eligible.items():
            want = self.count(getattr(self.shares, kind), self.n_premises)
            chosen = [p for p in pool if ok(*p)][:want]
            used = set(chosen)
            pool = [p for p in pool if p not in used]
            self.picks[kind] = sorted(chosen)

    def copy_declarations(self) -> None:
        """Copies of the live modules' declaration rows to change; the names that disappear."""
        s = self.s
        self.decls = {m: [dict(d) for d in s.decls[m]] for m in self.live}
        self.deleted_names = {self.decls[m][i]["name"] for m, i in self.picks["delete_decl"]}
        self.deleted_names |= {d["name"] for m in self.deleted_modules for d in s.decls[m]}

    def rename(self) -> None:
        self.renames = {self.decls[m][i]["name"]: "" for m, i in self.picks["rename"]}
        for old in sorted(self.renames):
            self.renames[old] = _fresh_name(old, RENAME_SUFFIXES, self.taken, self.rng)
        self.renamer = _Renamer(self.renames)

    def edit(self) -> None:
        for m, i in self.picks["edit"]:
            self.decls[m][i] = _edit_statement(self.decls[m][i], self.rng)

    def move(self) -> None:
        """Each moved declaration to a module its own imports directly (appended there later)."""
        self.moved: dict[str, str] = {}
        self.moves_into: dict[str, list[dict]] = {}
        for m, i in self.picks["move"]:
            target = self.rng.choice(self.targets[m])
            self.moved[self.decls[m][i]["name"]] = target
            self.moves_into.setdefault(target, []).append(self.decls[m][i])

    def drop_deleted_and_moved(self) -> None:
        drop_rows = {(m, i) for m, i in self.picks["delete_decl"] + self.picks["move"]}
        for m in self.live:
            self.decls[m] = [d for i, d in enumerate(self.decls[m]) if (m, i) not in drop_rows]

    def add_declarations(self) -> None:
        """Variants of a corpus declaration of a live module, and the moved declarations, at a module's end."""
        s, decls = self.s, self.decls
        self.hosts = [m for m in self.live if module_kept(m) and any(s.in_corpus(m, d) for d in decls[m])]
        appended: dict[str, list[dict]] = {}
        for _ in range(self.count(self.shares.add_decl, self.n_premises)):
            m = self.rng.choice(self.hosts)
            base = self.rng.choice([d for d in decls[m] if s.in_corpus(m, d)])
            new = _variant(base, self.renamer, self.taken, self.rng)
            appended.setdefault(m, []).append(new)
            self.added.append(new["name"])
        for target, rows in self.moves_into.items():
            appended.setdefault(target, []).extend(rows)
        for m, rows in appended.items():
            line = max((d["line"] for d in decls[m]), default=0) + 2
            for d in rows:
                d["line"], d["column"] = line, 0
                line += 2 + d.get("decl", "").count("\n")
            decls[m].extend(rows)

    def add_modules(self) -> None:
        """Each a new sibling importing an existing module, with a few new declarations."""
        s, rng = self.s, self.rng
        for _ in range(self.count(self.shares.add_module, self.n_modules)):
            base_mod = rng.choice(self.hosts)
            parent = base_mod.rpartition(".")[0] or base_mod
            name = _fresh_name(f"{parent}.{rng.choice(MODULE_STEMS)}", ("Ext", "Aux", "Lemmas", "Basic2", "Defs2"),
                               self.taken | set(s.modules) | set(self.new_modules), rng)
            imports = [{"name": base_mod, "isDirect": True}]
            imports += [{"name": i["name"], "isDirect": False} for i in s.imports[base_mod]
                        if i["name"] != base_mod]
            rows = []
            for k in range(self.shares.decls_per_added_module):
                base = rng.choice([d for d in self.decls[base_mod] if s.in_corpus(base_mod, d)])
                new = _variant(base, self.renamer, self.taken, rng)
                new["line"], new["column"] = 10 + 4 * k, 0
                rows.append(new)
                self.in_new_modules.append(new["name"])
            self.new_modules[name] = (imports, rows)

    def summary(self, src: Path, out: Path, seed: int, revision: str) -> dict:
        """What changed, with counts; `out` (already written) gives the count of new premise texts."""
        s, picks = self.s, self.picks
        summary = {
            "synthetic": True, "source": str(src), "source_revision": s.revision, "revision": revision,
            "seed": seed, "shares": asdict(self.shares),
            "counts": {
                "premises_before": self.n_premises,
                "modules_before": self.n_modules,
                "renamed": len(self.renames),
                "statements_edited": len(picks["edit"]),
                "declarations_deleted": len(picks["delete_decl"]),
                "declarations_added": len(self.added),
                "declarations_moved": len(self.moved),
                "modules_deleted": len(self.deleted_modules),
                "declarations_in_deleted_modules": sum(
                    1 for m in self.deleted_modules for d in s.decls[m] if s.in_corpus(m, d)),
                "modules_added": len(self.new_modules),
                "declarations_in_added_modules": len(self.in_new_modules),
            },
            "renames": self.renames,
            "edited": sorted(s.decls[m][i]["name"] for m, i in picks["edit"]),
            "deleted": sorted(s.decls[m][i]["name"] for m, i in picks["delete_decl"]),
            "added": sorted(self.added + self.in_new_modules),
            "moved": self.moved,
            "deleted_modules": self.deleted_modules,
            "added_modules": sorted(self.new_modules),
        }
        c = summary["counts"]
        c["premises_after"] = (self.n_premises - c["declarations_deleted"] - c["declarations_in_deleted_modules"]
                               + c["declarations_added"] + c["declarations_in_added_modules"])
        c["premise_texts_new"] = len(_corpus_texts(_Source(out)) - _corpus_texts(s))
        return summary


def _corpus_texts(s: _Source) -> set[str]:
    """The texts a model embeds for the corpus premises (renames change the texts that cite them, too)."""
    return {premise_text(d["kind"], d["name"], " ".join(d["args"]), d["type"], d.get("doc"))
            for m in s.modules for d in s.decls[m] if s.in_corpus(m, d)}


def _move_targets(s: _Source, module: str, gone: set[str]) -> list[str]:
    """Modules a declaration of `module` can move to: direct imports in the corpus with a file of their own."""
    return sorted(i["name"] for i in s.imports.get(module, ()) if i.get("isDirect") and i["name"] not in gone
                  and any(s.in_corpus(i["name"], d) for d in s.decls.get(i["name"], ())))


def _variant(base: dict, renamer: _Renamer, taken: set[str], rng: random.Random) -> dict:
    """A new declaration shaped like `base`: a fresh name and an edited statement (renames follow on write)."""
    d = dict(base)
    d["name"] = _fresh_name(renamer.token(base["name"]), ADDED_SUFFIXES, taken, rng)
    d["doc"] = None
    return _edit_statement(d, rng)


def _rewrite_decls(rows: list[dict], renamer: _Renamer) -> list[dict]:
    """A module's declarations with renamed names and references (a pattern of only the names used)."""
    texts = [v for d in rows for v in (d["name"], d.get("type"), d.get("decl"), d.get("doc"), *d["args"])
             if isinstance(v, str)]
    pattern = _Renamer.pattern(renamer.present(set(IDENT.findall("\n".join(texts)))))
    if pattern is None:
        return rows
    out = []
    for d in rows:
        d = dict(d)
        d["name"] = renamer.token(d["name"])
        d["args"] = [renamer.text(a, pattern) for a in d["args"]]
        for k in ("type", "decl", "doc"):
            if isinstance(d.get(k), str):
                d[k] = renamer.text(d[k], pattern)
        out.append(d)
    return out


def _rewrite_state(row: dict, renamer: _Renamer, deleted: set[str], pattern: re.Pattern | None) -> dict:
    row = dict(row)
    row["declName"] = renamer.token(row["declName"])
    for k in TEXT_FIELDS:
        if isinstance(row.get(k), str):
            row[k] = renamer.text(row[k], pattern) if pattern else row[k]
    for k in REC_FIELDS:
        if isinstance(row.get(k), list):
            recs = []
            for entry in row[k]:
                name, hint = parse_recommendation(entry)
                if name in deleted:
                    continue
                recs.append(f"({renamer.token(name)}, {hint})" if hint else renamer.token(name))
            row[k] = recs
    return row


def _write_states(src_file: Path, dst_file: Path, renamer: _Renamer, no_states: set[str], deleted: set[str]):
    """Copy a TrainingDataWithPremises file, rewriting only the lines a change touches."""
    if not src_file.exists():
        return
    data = src_file.read_bytes()
    tokens = set(IDENT.findall(data.decode("utf-8", errors="replace")))
    present = renamer.present(tokens)
    if not present and tokens.isdisjoint(no_states) and tokens.isdisjoint(deleted):
        shutil.copyfile(src_file, dst_file)
        return
    lines = []
    for raw in data.splitlines():
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            lines.append(raw + b"\n")  # malformed lines stay malformed, as in a real extraction
            continue
        if row.get("declName") in no_states:
            continue
        row = _rewrite_state(row, renamer, deleted, _Renamer.pattern(present))
        lines.append(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    dst_file.write_bytes(b"".join(lines))


def _write_outputs(s: _Source, out: Path, live: list[str], decls: dict[str, list[dict]],
                   new_modules: dict[str, tuple[list[dict], list[dict]]], renamer: _Renamer,
                   no_states: set[str], deleted: set[str], revision: str) -> None:
    for part in ("Imports", "Declarations", "TrainingDataWithPremises"):
        (out / part).mkdir()
    for m in live:
        imports = s.dir / "Imports" / f"{m}.jsonl"
        if imports.exists():
            shutil.copyfile(imports, out / "Imports" / imports.name)
        if (s.dir / "Declarations" / f"{m}.jsonl").exists() or decls[m]:
            (out / "Declarations" / f"{m}.jsonl").write_bytes(
                _dumps_lines(_rewrite_decls(decls[m], renamer)))
        _write_states(s.dir / "TrainingDataWithPremises" / f"{m}.jsonl",
                      out / "TrainingDataWithPremises" / f"{m}.jsonl", renamer, no_states, deleted)
    for m, (imports, rows) in new_modules.items():
        (out / "Imports" / f"{m}.jsonl").write_bytes(_dumps_lines(imports))
        (out / "Declarations" / f"{m}.jsonl").write_bytes(_dumps_lines(rows))
    modules = [{"name": m} for m in live + sorted(new_modules)]
    (out / "Modules.jsonl").write_bytes(_dumps_lines(modules))
    blacklist = [renamer.token(n) for n in s.blacklist_list]
    (out / "HammerBlacklist.jsonl").write_text(json.dumps({"hammerBlacklist": blacklist}, ensure_ascii=False))
    (out / "revision").write_text(revision + "\n")
