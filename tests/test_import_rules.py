"""The floor plan's import rule (docs/decisions.md, "Floor plan"), checked by import-linter over the real
imports, those inside functions included: a change that makes serve import evaluation fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def lint_imports() -> list[str]:
    exe = Path(sys.executable).parent / "lint-imports"
    return [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]


def test_the_contracts_name_the_rule():
    """Not vacuous: the layers and the serve/export ban are the contracts the linter checks."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_type = {c["type"]: c for c in config["contracts"]}
    layers = by_type["layers"]["layers"]
    assert layers.index("leanpremise.eval") > next(i for i, layer in enumerate(layers) if "leanpremise.serve" in layer)
    assert "leanpremise.rank | leanpremise.model" in layers
    assert set(by_type["forbidden"]["source_modules"]) == {"leanpremise.serve", "leanpremise.export"}
    assert {"leanpremise.eval", "leanpremise.train"} <= set(by_type["forbidden"]["forbidden_modules"])


def test_imports_follow_the_floor_plan():
    if not Path(lint_imports()[0]).exists() and shutil.which("lint-imports") is None:
        pytest.fail("lint-imports not installed (it is in the [test] extra)")
    result = subprocess.run(lint_imports() + ["--no-cache"], check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
