"""`leanpremise serve BUNDLE [BUNDLE ...]` (or `--from_hub DATA_REPO@REV MODEL_REPO@REV`): run the premise
server; several bundles (or a directory of them) are served side by side, each at /<tag>/.

Every flag but `--from_hub` is a field of a dataclass made from `ServeConfig` (serve/settings.py) and
turned into flags by HfArgumentParser, so its name, type, default, environment variable and help are
written once, there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from leanpremise.flags import Switch
from leanpremise.serve.settings import ServeConfig

logger = logging.getLogger(__name__)


@dataclass
class HubFlags:
    # argparse types each of the two values: text.
    from_hub: str | None = field(default=None, metadata={
        "nargs": 2, "metavar": ("DATA_REPO@REVISION", "MODEL_REPO@REVISION"),
        "help": "download premises.tar.gz + embeddings and the model from the Hub "
                "[env DATA_REPO, DATA_REVISION, MODEL_ID, MODEL_REVISION]"})


def register(sub) -> None:
    p = sub.add_parser(
        "serve", dataclass_types=[HubFlags, setting_flags(ServeConfig)],
        help="run the premise server Lean's Cloud.premiseSelector calls",
        description="Serve /indexed-premises, /indexed-modules, /max-new-premises and /retrieve (plus /health, "
                    "/metrics) from a bundle written by `leanpremise export`, or from the Hub. Every option "
                    "can also come from its environment variable (the original server's names) or a .env file "
                    "in the working directory; flags override the environment, which overrides .env.",
    )
    bundle = ServeConfig.model_fields["bundle"]
    # The bundle positional takes several bundles: the first is BUNDLE_DIR, the rest BUNDLE_DIRS.
    p.add_argument("bundle", nargs="*", default=None, metavar="BUNDLE", help=_help(bundle))
    p.set_defaults(func=run)


def setting_flags(model: type[ServeConfig]) -> type:
    """A dataclass with one field per flag of `model`'s settings, named after the flag, its dest the
    setting. Every field defaults to None, so a flag not given leaves the setting to the environment and
    .env; values stay text, for the model to parse, so a flag and its environment variable are checked
    alike. A bool setting's flag is a bare switch that turns its default over (`--no_verify`)."""
    fields = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        flag = extra["flag"] or f"--{name}"
        if not extra["cli"] or not flag.startswith("--"):
            continue
        kind = _base_type(info.annotation)
        meta = {"dest": name, "aliases": extra["old_flags"], "help": _help(info)}
        if kind is bool:
            meta |= {"action": Switch, "const": not info.default}
        elif typing.get_origin(kind) is list:
            meta |= {"action": "append", "metavar": "TEXT"}
        else:
            meta |= {"metavar": _metavar(kind)}
        kind = bool | None if kind is bool else str | None
        fields.append((flag.removeprefix("--"), kind, field(default=None, metadata=meta)))
    return dataclasses.make_dataclass("ServeFlags", fields)


def _help(info) -> str:
    """The help line of a setting: what it does, its environment variable(s) and default."""
    extra = info.json_schema_extra
    env = " or ".join([extra["env"], *extra["old_env"]])
    if _base_type(info.annotation) is bool:
        text = (f"turn {'off' if info.default else 'on'}: {info.description} [env {env}=true|false; "
                f"default {'on' if info.default else 'off'}]")
    else:
        text = f"{info.description} [env {env}{'' if info.default is None else f'; default {info.default}'}]"
    return text.replace("%", "%%")


def _base_type(annotation):
    """`int | None` -> int; a Literal stays itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _metavar(kind) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "{" + ",".join(typing.get_args(kind)) + "}"
    return {int: "INT", float: "SECONDS", Path: "PATH"}.get(kind, "TEXT")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """Flags given, over the environment, over .env, over the defaults; checked to name something to serve."""
    from leanpremise.serve.revisions.loader import parse_repo_at
    from leanpremise.serve.settings import load_config

    flags = {name: getattr(args, name) for name in ServeConfig.model_fields if hasattr(args, name)}
    positional = flags.get("bundle")
    if isinstance(positional, list):
        flags["bundle"] = positional[0] if positional else None
        if len(positional) > 1:
            flags["bundles"] = positional[1:]
    if args.from_hub:
        (data_repo, data_rev), (model_id, model_rev) = map(parse_repo_at, args.from_hub)
        flags.update(data_repo=data_repo, data_revision=data_rev, model_id=model_id, model_revision=model_rev)
    return load_config(**flags).check_source()


def run(args: argparse.Namespace) -> int:
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.plan import plan_revisions
    from leanpremise.serve.settings import ConfigError

    if not getattr(args, "verbose", False):
        # faiss logs each CPU-specific library it tries and fails to load (AVX512_SPR, ...) at INFO: harmless.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        if config.bundle is not None:
            # A bundle that cannot load, or a bad tag, ends here, before uvicorn says it runs.
            plan_revisions(config)
    except (ConfigError, BundleError) as e:
        logger.error("%s", e)
        return 2
    return serve(config)


def serve(config: ServeConfig) -> int:
    """Run uvicorn until stopped; 1 when loading the bundle or model failed (uvicorn is then stopped)."""
    import uvicorn

    from leanpremise.serve.http.app import create_app

    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(e: BaseException) -> None:
        failed.append(e)
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_load_failed=stop)
    server = uvicorn.Server(uvicorn_config(app, config))
    server.run()
    return 1 if failed else 0


def uvicorn_config(app, config: ServeConfig, **overrides):
    """uvicorn's settings for `app`: h11 with a header timeout and bounds on header bytes and on a body's
    framing (uvicorn's httptools protocol has neither), the keep-alive timeout, the connection backstop,
    and X-Forwarded-For trusted only from FORWARDED_ALLOW_IPS (uvicorn's own default trusts loopback)."""
    import uvicorn

    from leanpremise.serve.http.connection import BodyFraming, Writing, timed_h11

    framing = BodyFraming(config.max_body_bytes, config.max_body_chunks, config.max_header_bytes)
    proxies = [ip.strip() for ip in (config.forwarded_allow_ips or "").split(",") if ip.strip()]
    options = {"host": config.host, "port": config.port, "log_level": "info", "timeout_graceful_shutdown": 5,
               "http": timed_h11(config.header_timeout_s, framing,
                                 Writing(config.send_timeout_s, config.max_connections_per_client,
                                         config.client_ipv6_prefix)),
               "timeout_keep_alive": config.keep_alive_timeout_s, "limit_concurrency": config.max_connections,
               "h11_max_incomplete_event_size": config.max_header_bytes,
               "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or ""}
    return uvicorn.Config(app, **{**options, **overrides})
