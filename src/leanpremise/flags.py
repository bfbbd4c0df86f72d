"""Every command's flags: dataclass fields made into flags by HfArgumentParser, read back as dataclasses.

The one flag generator of the CLI (docs/decisions.md, "Command line"); `leanpremise.cli` and each stage's
`cli` module build their parsers with :class:`ArgumentParser` and read the parsed values with
:func:`from_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import field


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
        adds for a field defaulting to True says what it means rather than repeat the field's help. A field
        whose metadata says `flag=False` gets no flag: the command's config keeps it at its default."""
        if kwargs.pop("flag", True) is False:  # a field of the command's config that is no flag
            return None
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
    `dest` is read from there, one with `flag=False` is left at its default. The namespace is left whole
    (positionals and `func` stay in it)."""
    made = tuple(kind(**{f.name: getattr(args, f.metadata.get("dest", f.name))
                         for f in dataclasses.fields(kind) if f.init and f.metadata.get("flag", True)})
                 for kind in kinds)
    return made[0] if len(made) == 1 else made
