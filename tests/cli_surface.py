"""The public surface of the CLI and the server, as data: every command's flags and the /retrieve schema.

`tests/test_cli_surface.py` compares it with `tests/data/cli_surface.json`, written from the code before
the floor-plan reorganisation, so that moving code never drops or renames a flag, an environment name or a
field of the request. Regenerate on purpose with `python tests/cli_surface.py --write` (then review the diff).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "data" / "cli_surface.json"


def _walk(parser: argparse.ArgumentParser, path: str, out: dict) -> None:
    flags, positionals = set(), []
    for action in parser._actions:  # argparse offers no public way to list a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _walk(sub, f"{path} {name}".strip(), out)
        elif action.option_strings:
            flags.update(action.option_strings)
        else:
            positionals.append(action.dest)
    out[path or "leanpremise"] = {"flags": sorted(flags), "positionals": positionals}


def surface() -> dict:
    """{"commands": {command path: {flags, positionals}}, "env": {setting: env name}, "retrieve_schema": ...}."""
    from leanpremise.cli import build_parser
    from leanpremise.train.cli import build_parser as train_parser

    commands: dict = {}
    _walk(build_parser(), "", commands)
    commands.pop("train", None)  # listed by the main parser, parsed by its own (below)
    _walk(train_parser(), "train", commands)
    return {"commands": commands, "env": _env_names(), "retrieve_schema": _retrieve_schema()}


def _env_names() -> dict:
    try:
        from leanpremise.serve.settings import ServeConfig
    except ImportError:
        return {}
    return {name: f.json_schema_extra["env"] for name, f in ServeConfig.model_fields.items()}


def _retrieve_schema() -> dict:
    from leanpremise.serve.http.schemas import request_model
    from leanpremise.serve.settings import ServeConfig

    return request_model(ServeConfig(_env_file=None)).model_json_schema()


if __name__ == "__main__":
    data = surface()
    if "--write" in sys.argv:
        SNAPSHOT.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"wrote {SNAPSHOT}")
    else:
        print(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))
