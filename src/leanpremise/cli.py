"""`leanpremise <command>`: one CLI; each stage registers its own subcommands.

A stage's `cli` module provides `register(subparsers)`, adding its parsers with
`set_defaults(func=...)`. Every flag of every command is a field of a dataclass,
turned into flags by HfArgumentParser (`sub.add_parser(name, dataclass_types=[...])`),
and a command reads its flags back as those dataclasses (:func:`from_args`); only
positional arguments are plain `add_argument` calls. A command that parses its own
arguments (training takes every Hugging Face TrainingArguments flag) is listed in
OWN_PARSER and receives the raw argument list.

Every command reports bad input the same way: `leanpremise <command>: error:
<message>` on stderr, exit status 2, no traceback. Flags are never abbreviated
(`--max_step` is an error, not `--max_steps`), and a flag error shows the usage
of the command it belongs to.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field

from leanpremise.data.errors import DataLayoutError


def _hf_argument_parser() -> type:
    """transformers' HfArgumentParser, imported without its advice that PyTorch is missing: the core install
    (`pip install leanpremise`, no torch) runs the commands that need none, and would print it on every run.
    TRANSFORMERS_NO_ADVISORY_WARNINGS is transformers' documented switch; it is set for the import only."""
    name, before = "TRANSFORMERS_NO_ADVISORY_WARNINGS", os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ[name] = "1"
    try:
        from transformers import HfArgumentParser
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
    return HfArgumentParser


HfArgumentParser = _hf_argument_parser()

STAGES = [
    "leanpremise.data.cli",
    "leanpremise.train.cli",
    "leanpremise.eval.cli",
    "leanpremise.export.cli",
    "leanpremise.serve.cli",
    "leanpremise.bench.cli",
]

USER_ERRORS = (DataLayoutError, FileNotFoundError)

RENAMED_FLAGS = {"--seed": "--split_seed", "--no_cache": "--no_use_data_cache"}
"""Data flags renamed when the data options became one dataclass: an old spelling gets a hint, not a meaning."""

OWN_PARSER = {"train": "leanpremise.train.cli"}
"""Commands whose module has `main(argv)` parsing everything after the command name."""


class Switch(argparse.Action):
    """A flag that takes no value and stores `const` (True unless the field's metadata says otherwise).

    HfArgumentParser gives a bool field an optional value (`--flag [True|False]`), which would take a
    positional argument that follows for that value (`bench results --verbose a.json b.json`); a field
    whose metadata has `action=Switch` keeps argparse's store_true / store_const meaning instead. The
    `type` and `nargs` HfArgumentParser passes for a bool are dropped."""

    def __init__(self, option_strings, dest, const=True, default=None, required=False, help=None, **_ignored):
        super().__init__(option_strings, dest, nargs=0, const=const, default=default, required=required,
                         help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const)


def switch(help: str, **metadata) -> bool:
    """A bool field whose flag is a bare switch (off unless given): `grid: bool = switch("...")`."""
    return field(default=False, metadata={"action": Switch, "help": help, **metadata})


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser without abbreviations, remembering which (sub)command parsed the arguments.

    Subparsers are made of the parent's class, so every command's parser is one of these, and
    `sub.add_parser(name, dataclass_types=[...])` makes a command's flags from its dataclasses. Help is
    argparse's plain format: HfArgumentParser's default one adds `(default: None)` to every optional flag.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *flags, **kwargs):
        """Flags as this CLI has always shown them: a default unless it is None (or the help gives it,
        `(default ...`), `--flag [True|False]` for HfArgumentParser's bool flags, and the `--no_flag` it
        adds for a field defaulting to True says what it means rather than repeat the field's help."""
        dest, action, default = kwargs.get("dest"), kwargs.get("action"), kwargs.get("default")
        if action == "store_false" and dest and flags and flags[0] == f"--no_{dest}":
            kwargs["help"] = f"same as --{dest} False"
        elif action is not Switch and kwargs.get("nargs") == "?" and kwargs.get("const") is True:
            kwargs.setdefault("metavar", "True|False")
        help_text = kwargs.get("help")
        if (help_text and action not in (Switch, "store_false") and "(default" not in help_text
                and default is not None and default != [] and default is not argparse.SUPPRESS):
            kwargs["help"] = f"{help_text} (default: %(default)s)"
        return super().add_argument(*flags, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        if getattr(ns, "parser_", None) is None:  # the innermost parser runs first and wins
            ns.parser_ = self
        return ns, extras


def from_args(args: argparse.Namespace, *kinds):
    """Instances of the dataclasses `kinds` filled from parsed `args` (one instance alone, else a tuple),
    as HfArgumentParser's `parse_args_into_dataclasses` builds them; a field whose metadata names another
    `dest` is read from there. The namespace is left whole (positionals and `func` stay in it)."""
    made = tuple(kind(**{f.name: getattr(args, f.metadata.get("dest", f.name))
                         for f in dataclasses.fields(kind) if f.init})
                 for kind in kinds)
    return made[0] if len(made) == 1 else made


@dataclass
class GlobalFlags:
    verbose: bool = switch("debug logging", aliases=["-v"])


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        dataclass_types=[GlobalFlags],
        prog="leanpremise",
        description="Train, evaluate, export and serve the premise selector behind LeanHammer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except ModuleNotFoundError as e:
        if (e.name or "leanpremise").split(".")[0] == "leanpremise":
            raise
        # A command of an extra run on an install without it: one line, not a traceback.
        command = f"leanpremise {argv[0]}" if argv else "leanpremise"
        print(f"{command}: error: {e.name.split('.')[0]} is not installed; this command needs an extra "
              "(README.md, Install: e.g. pip install 'leanpremise[all]')", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in OWN_PARSER:
        setup_logging()
        return int(importlib.import_module(OWN_PARSER[argv[0]]).main(argv[1:]) or 0)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's own parser, with its usage
        hints = [f"{old} is now {new}" for old, new in RENAMED_FLAGS.items()
                 if any(e == old or e.startswith(old + "=") for e in extras)]
        args.parser_.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        # Bad input is reported as one clear line naming the file, not a traceback.
        print(f"{args.parser_.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
