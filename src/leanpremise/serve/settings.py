"""The server's settings: one typed model, from which the environment names, the `.env` file and the
flags of `leanpremise serve` all follow.

Precedence: flags, then environment variables, then a `.env` file in the working directory, then the
defaults. The environment names of settings the original server had are its names (MAX_K,
MAX_NEW_PREMISES, LRU_CACHE_SIZE, DTYPE, EMBED_SERVICE_URL, ...), so an existing `.env` keeps working.
A new setting is one `setting(...)` field below: its flag and its help line are generated from it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from leanpremise.bundle.layout import FAST_VERIFY_MAX_BYTES
from leanpremise.rank.rerank.validate import HARD_LIMITS

Backend = Literal["auto", "torch", "onnx", "onnx-int8", "tei"]
Dtype = Literal["float32", "float16", "bfloat16"]
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
INSECURE_CACHE_KEY = "insecure-none"
"""EMBEDDING_CACHE_KEY's value that runs a Redis cache without authenticating its values (docs/decisions.md)."""
MIN_CACHE_KEY_CHARS = 16

_COMMENT = re.compile(r"(?:^|\s)#.*$", re.DOTALL)
"""A trailing `# comment` (a `#` at the start or after whitespace), as `.env` files carry them."""


class ConfigError(ValueError):
    """A setting with a bad value, or a combination of settings that cannot serve; one line."""


def setting(default, env: str, help: str, *, flag: str | None = None, cli: bool = True,
            old_env: tuple[str, ...] = (), old_flags: tuple[str, ...] = (), **constraints):
    """A field of :class:`ServeConfig`: default, environment variable `env`, help text; `flag` spells its
    command-line flag when that is not `--<field name>`, `cli=False` leaves it without one. `old_env` and
    `old_flags` are earlier names still read (the settings record `env` and `flag` as the names)."""
    alias = AliasChoices(env, *old_env) if old_env else env
    return Field(default, validation_alias=alias, description=help,
                 json_schema_extra={"env": env, "flag": flag, "cli": cli, "old_env": list(old_env),
                                    "old_flags": list(old_flags)}, **constraints)


class ServeConfig(BaseSettings):
    """Every setting of the premise server."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore",
                                      validate_by_name=True, validate_by_alias=True)

    # ---- what to serve -----------------------------------------------------------------------------
    bundle: Path | None = setting(None, "BUNDLE_DIR", "bundle dir written by `leanpremise export`, or a "
                                  "directory of bundles (one revision each)", flag="bundle")
    bundles: list[Path] = setting([], "BUNDLE_DIRS", "more bundle dirs (or directories of bundles) served "
                                  "beside BUNDLE_DIR, each at /<tag>/ (a JSON list; on the command line: "
                                  "more positional arguments)", cli=False)
    tags: list[str] = setting([], "REVISION_TAGS", "serve a bundle under a tag of your choice: BUNDLE=TAG, "
                              "BUNDLE a bundle path or the tag it would get (repeatable; env: a JSON list)",
                              flag="--tag")
    default_revision: str | None = setting(None, "DEFAULT_REVISION", "tag of the revision `/` serves "
                                           "(default: the newest Lean version, then the latest export)",
                                           flag="--default")
    admin_reload: bool = setting(False, "ADMIN_RELOAD", "accept POST /admin/reload (re-read the bundle list, "
                                 "as SIGHUP does) from clients with ADMIN_TOKEN", flag="--admin_reload")
    data_repo: str | None = setting(None, "DATA_REPO", "dataset repo holding premises.tar.gz and embeddings/",
                                    cli=False)
    data_revision: str | None = setting(None, "DATA_REVISION", "revision of DATA_REPO", cli=False)
    model_id: str | None = setting(None, "MODEL_ID", "model repo on the Hub", cli=False)
    model_revision: str | None = setting(None, "MODEL_REVISION", "revision of MODEL_ID", cli=False)
    data_dir: Path | None = setting(None, "DATA_DIR", "where hub downloads and unpacked premises go "
                                                      "(default: the leanpremise cache)")
    verify: bool = setting(True, "VERIFY_CHECKSUMS", "check the size and sha256 of every bundle file (model, "
                                                      "ONNX, premises archive, embeddings) against its manifest "
                                                      "at startup", flag="--no_verify")
    allow_unverified_hub: bool = setting(False, "ALLOW_UNVERIFIED_HUB", "serve a --from_hub data repo that has no "
                                         "manifest.json (its downloads cannot be verified); off: refused",
                                         flag="--allow_unverified_hub")
    archive_max_member_bytes: int = setting(256 * 2**20, "ARCHIVE_MAX_MEMBER_BYTES", "bytes of one file unpacked "
                                            "from a premises archive; larger: the archive is refused", ge=1)
    archive_max_total_bytes: int = setting(16 * 2**30, "ARCHIVE_MAX_TOTAL_BYTES", "bytes a premises archive may "
                                           "unpack to in all; more: refused", ge=1)
    archive_max_line_bytes: int = setting(16 * 2**20, "ARCHIVE_MAX_LINE_BYTES", "bytes of one line of a file "
                                          "unpacked from a premises archive; longer: refused", ge=1)
    archive_max_members: int = setting(1_000_000, "ARCHIVE_MAX_MEMBERS", "files and folders of a premises "
                                       "archive; more: refused", ge=1)
    fast_verify: bool = setting(False, "VERIFY_FAST", "check every bundle file's size but hash only files up "
                                f"to {FAST_VERIFY_MAX_BYTES >> 20} MiB (fast startup; damage that keeps a large "
                                "file's size goes unseen)", flag="--fast_verify")
    # ---- the HTTP server ---------------------------------------------------------------------------
    host: str = setting("127.0.0.1", "SERVE_HOST", "address to listen on")
    port: int = setting(8000, "SERVE_PORT", "port to listen on", ge=0, le=65535)
    retry_after_s: int = setting(1, "RETRY_AFTER_S", "Retry-After seconds of an overload 503", ge=0)
    max_refusals_per_client: int = setting(32, "MAX_REFUSALS_PER_CLIENT", "503/429 answers one client address "
                                           "may get per 10 s on average; past that its requests get 429 "
                                           "before their bodies are read, until it slows down (0: off)", ge=0)
    docs: bool = setting(False, "SERVE_DOCS", "serve /docs, /redoc and /openapi.json")
    max_concurrent_requests: int = setting(64, "MAX_CONCURRENT_REQUESTS", "requests (but /health and "
                                           "/metrics) handled at once; more get 503 + Retry-After", ge=1)
    max_work_per_client: int = setting(16, "MAX_WORK_PER_CLIENT", "work slots (of MAX_CONCURRENT_REQUESTS) one "
                                       "client may hold at once; more: 429 + Retry-After, counted as a refusal "
                                       "(0: no cap, e.g. behind a proxy not listed in FORWARDED_ALLOW_IPS)", ge=0)
    max_connections_per_client: int = setting(128, "MAX_CONNECTIONS_PER_CLIENT", "open connections one client "
                                              "address may hold; more are aborted at once (0: no cap, e.g. "
                                              "behind a proxy not listed in FORWARDED_ALLOW_IPS)", ge=0)
    send_timeout_s: float = setting(30.0, "SEND_TIMEOUT_S", "seconds a response may sit unread in the send "
                                    "buffer without draining; longer: the connection is aborted", gt=0)
    max_connections: int = setting(1024, "MAX_CONNECTIONS", "open connections uvicorn accepts (beyond: 503 "
                                   "from uvicorn itself, a backstop for MAX_CONCURRENT_REQUESTS)", ge=1)
    keep_alive_timeout_s: float = setting(5.0, "KEEP_ALIVE_TIMEOUT_S", "seconds an idle connection is kept "
                                          "open between requests", gt=0)
    header_timeout_s: float = setting(10.0, "HEADER_TIMEOUT_S", "seconds a connection may take to send a "
                                      "request line and headers; slower: closed", gt=0)
    body_timeout_s: float = setting(30.0, "BODY_TIMEOUT_S", "seconds a request body may take to arrive, "
                                    "from its first byte to its last; slower: 408", gt=0)
    body_grace_s: float = setting(5.0, "BODY_GRACE_S", "seconds a request body may take before "
                                  "MIN_BODY_BYTES_PER_S applies", ge=0)
    min_body_bytes_per_s: float = setting(4096.0, "MIN_BODY_BYTES_PER_S", "bytes per second past "
                                          "BODY_GRACE_S a request body must keep up; slower: 408", gt=0)
    max_body_readers: int = setting(256, "MAX_BODY_READERS", "connections reading a request body at once (apart "
                                    "from MAX_CONCURRENT_REQUESTS); one more cuts the slowest reader (408)", ge=1)
    max_body_readers_per_client: int = setting(64, "MAX_BODY_READERS_PER_CLIENT", "request bodies being read "
                                               "from one client address at once; more: 429 (0: no cap, e.g. "
                                               "behind a proxy not listed in FORWARDED_ALLOW_IPS)", ge=0)
    max_body_buffer_bytes: int = setting(256 * 2**20, "MAX_BODY_BUFFER_BYTES", "bytes all request bodies "
                                         "being read may take together; the request passing it: 503", ge=1)
    max_body_chunks: int = setting(1024, "MAX_BODY_CHUNKS", "chunks a chunked request body may have, plus one "
                                   "per KiB of body; more: 400 (and wire bytes past MAX_BODY_BYTES plus their "
                                   "framing: 413)", ge=1)
    forwarded_allow_ips: str | None = setting(None, "FORWARDED_ALLOW_IPS", "comma-separated addresses (or networks) "
                                       "of proxies whose X-Forwarded-For is trusted as the client address "
                                       "(default: none, the peer address is the client)")
    client_ipv6_prefix: int = setting(64, "CLIENT_IPV6_PREFIX", "bits of an IPv6 client address that tell "
                                      "clients apart for every per-client bound (a host owns a /64; IPv4-mapped "
                                      "addresses count as their IPv4 address)", ge=1, le=128)
    admin_token: str | None = setting(None, "ADMIN_TOKEN", "token POST /admin/reload must carry as "
                                      "`Authorization: Bearer <token>` (without one the route is off)", cli=False,
                                      repr=False)
    max_header_bytes: int = setting(65536, "MAX_HEADER_BYTES", "bytes of a request line and headers "
                                    "(larger: the connection is refused by uvicorn's parser)", ge=1024)
    # ---- request limits: checked before any work (docs/decisions.md has why these defaults) --------
    max_body_bytes: int = setting(16 * 2**20, "MAX_BODY_BYTES", "bytes of a request body; larger: 413, "
                                  "refused while reading (or from Content-Length), never buffered whole", ge=1)
    max_states: int = setting(64, "MAX_STATES", "states of one request (a list of goals); more: 422", ge=1)
    max_state_chars: int = setting(100_000, "MAX_STATE_CHARS", "characters of one state; longer: 422", ge=1)
    max_decl_chars: int = setting(50_000, "MAX_DECL_CHARS", "characters of one new premise's decl; longer: "
                                  "422", ge=1)
    max_list_entries: int = setting(32_768, "MAX_LIST_ENTRIES", "entries of each list of a request "
                                    "(imported_modules, imported_all_modules, local_premises, "
                                    "new_premises); more: 422", ge=1)
    max_name_chars: int = setting(2048, "MAX_NAME_CHARS", "characters of a module or premise name (or "
                                  "path) in a request; longer: 422", ge=1)
    max_results: int = setting(16_384, "MAX_RESULTS", "results of one response: states x k (k after "
                               "clipping to MAX_K); more: 422", ge=1)
    chars_per_token: int = setting(64, "CHARS_PER_TOKEN", "states and decls are cut to the model's max "
                                   "sequence length times this many characters before tokenising (the "
                                   "tokenizer keeps only that many tokens anyway)", ge=1)
    # ---- request limits ----------------------------------------------------------------------------
    max_k: int = setting(1024, "MAX_K", "most premises one request gets back (a larger k is clipped)", ge=1)
    max_new_premises: int = setting(2048, "MAX_NEW_PREMISES", "new premises of a request beyond this are "
                                                              "dropped (also answered by /max-new-premises)",
                                    ge=0)
    # ---- embedding ---------------------------------------------------------------------------------
    backend: Backend = setting("auto", "EMBED_BACKEND",
                               "auto: a static model's numpy encoder for a static bundle; else on CPU the "
                               "bundle's int8 ONNX model if it has one, else its float32 ONNX model, else "
                               "PyTorch; on a GPU, PyTorch (see docs/decisions.md)")
    device: str = setting("cpu", "EMBED_DEVICE", "torch device of the torch backend")
    embed_service_url: str | None = setting(None, "EMBED_SERVICE_URL", "text-embeddings-inference base URL "
                                                                       "for backend tei (POST {url}/embed)")
    embed_service_timeout: float = setting(30.0, "EMBED_SERVICE_TIMEOUT", "seconds to wait for the TEI "
                                           "service's answer to one call; longer: that request gets 502", gt=0)
    embed_service_max_concurrent_inputs: int = setting(
        128, "EMBED_SERVICE_MAX_CONCURRENT_INPUTS", "uncached new premises of large requests (the bulk lane) "
        "being embedded or queued at once; a request whose next chunk would pass it gets 503 + Retry-After. "
        "Goals are never held by it", flag="--max_concurrent_inputs", ge=1)
    max_client_batch_size: int = setting(32, "MAX_CLIENT_BATCH_SIZE", "texts one request hands to the embedder "
                                                                      "at a time (and per TEI call)", ge=1)
    inline_chunk: int = setting(128, "INLINE_CHUNK", "texts an embedder cheaper than a hand-over (a static "
                                "model) embeds on the event loop in one go: other requests wait for at most one "
                                "such chunk of a large request (about 5 ms), and each chunk costs a fixed setup",
                                ge=1)
    embed_batch_size: int = setting(64, "EMBED_BATCH_SIZE", "texts per torch encode call, and most texts "
                                    "batched for a backend that batches well (ONNX Runtime on CPU embeds one "
                                    "text per run: no padding)", ge=1)
    embed_workers: int | None = setting(None, "EMBED_WORKERS", "embedding workers, each with its own tokenizer "
                                        "(default: 2 on CPU, 1 on a GPU or with TEI)", ge=1)
    embed_threads: int | None = setting(None, "EMBED_THREADS", "threads per CPU embedding worker (default: the "
                                        "cores divided among the workers)", ge=1)
    urgent_max_texts: int = setting(8, "URGENT_MAX_TEXTS", "requests with at most this many uncached texts "
                                    "take the urgent lane, which workers drain before bulk work", ge=1)
    bulk_chunk: int = setting(8, "BULK_CHUNK", "texts per chunk of a large request's embedding: an urgent "
                              "request waits behind at most one such chunk", ge=1)
    lru_cache_size: int = setting(131072, "LRU_CACHE_SIZE", "embeddings of new premises and states kept, "
                                                            "least recently used evicted first", ge=1)
    cache_max_bytes: int = setting(256 * 2**20, "CACHE_MAX_BYTES", "bytes the cached embeddings (and their "
                                   "hashed keys) may take; least recently used evicted first", ge=1)
    token_cache_entries: int = setting(65536, "TOKEN_CACHE_ENTRIES", "a static model's tokenized pieces (its "
                                       "tokenizer's words, up to 64 characters) kept per embedding worker, so a word is "
                                       "tokenized once; emptied when full (0: off)", ge=0)
    # ---- fused ranking (a bundle written with `export --fusion`) ------------------------------------
    fusion: bool = setting(True, "FUSION", "fuse the dense ranking with the bundle's lexical rankers (BM25, "
                           "MePo) where the bundle has a fusion; off: dense only", flag="--no_fusion",
                           old_env=("HYBRID",), old_flags=("--no_hybrid", "--no-hybrid"))
    lexical_threads: int = setting(2, "LEXICAL_THREADS", "threads running the lexical rankers of hybrid "
                                   "requests (one request's states run in one thread)", ge=1, le=64)
    # ---- re-ranking (a bundle written with `export --rerank`) ---------------------------------------
    rerank: bool = setting(True, "RERANK", "re-rank with the bundle's learned reranker where the bundle has "
                           "one (it replaces the fusion); off: the bundle's plain ranking", flag="--no_rerank")
    max_rerank_trees: int = setting(10_000, "MAX_RERANK_TREES", "trees a bundle's reranker model may have; "
                                    "more: the bundle is refused", ge=1, le=HARD_LIMITS.max_trees)
    max_rerank_leaves: int = setting(4_096, "MAX_RERANK_LEAVES", "leaves one tree of a bundle's reranker may "
                                     "have; more: the bundle is refused", ge=2, le=HARD_LIMITS.max_leaves)
    max_lexical_work: int = setting(4_000_000, "MAX_LEXICAL_WORK", "characters (states and new premises, as "
                                    "cut to the model's length) one request of a hybrid or re-ranked revision "
                                    "may hand the lexical rankers; more: 422 before any work", ge=1)
    lexical_cache_max_bytes: int = setting(64 * 2**20, "LEXICAL_CACHE_MAX_BYTES", "bytes (as Python holds "
                                           "them: keys, texts, term dicts, symbol sets) the lexical analyses of "
                                           "new premises kept per hybrid revision may take, each of the BM25 "
                                           "and MePo caches; least recently used evicted first", ge=1)
    # ---- the persistent embedding cache (docs/decisions.md: why on by default, why LMDB) -------------
    embedding_cache_on: bool = setting(True, "EMBEDDING_CACHE_ENABLED", "keep the embeddings of states and new "
                                       "premises in a persistent cache behind the in-memory one (LMDB on disk, "
                                       "or Redis with EMBEDDING_CACHE_URL), so a restarted server does not embed "
                                       "them again", flag="--no_embedding_cache")
    embedding_cache: Path | None = setting(None, "EMBEDDING_CACHE_DIR", "directory of the persistent embedding "
                                           "cache, an LMDB store shared by this host's server processes "
                                           "(default: <DATA_DIR>/embeddings.lmdb; `off` or an empty flag value: "
                                           "none)")
    embedding_cache_max_bytes: int = setting(2 * 2**30, "EMBEDDING_CACHE_MAX_BYTES", "bytes the LMDB cache "
                                             "file may grow to (vectors fill at most a fifth of it, the rest is "
                                             "B-tree and copy-on-write room); oldest vectors evicted first",
                                             ge=2**20)
    embedding_cache_url: str | None = setting(None, "EMBEDDING_CACHE_URL", "redis://HOST:PORT/N (or rediss://, "
                                              "unix://): keep the persistent cache in Redis, shared by replicas, "
                                              "instead of the LMDB directory")
    embedding_cache_ttl_s: int = setting(30 * 24 * 3600, "EMBEDDING_CACHE_TTL_S", "seconds a vector lives in "
                                         "Redis (0: no expiry; then give Redis a maxmemory and "
                                         "maxmemory-policy allkeys-lru)", ge=0)
    embedding_cache_key: SecretStr | None = setting(
        None, "EMBEDDING_CACHE_KEY", "secret (at least 16 characters, the same on every replica) under which "
        "Redis cache values carry an HMAC-SHA256; a value without the right one is a miss. Required with "
        f"EMBEDDING_CACHE_URL; `{INSECURE_CACHE_KEY}` runs Redis without it (only for a Redis no one else can "
        "write). Environment only, so it stays out of the process list", cli=False)
    # ---- search ------------------------------------------------------------------------------------
    dtype: Dtype = setting("float32", "DTYPE", "precision the corpus embeddings are kept and ranked at: float32 "
                           "(a float16 copy is scanned, then rescored exactly), or float16/bfloat16 (only the "
                           "16-bit copy: half the memory)")
    max_queries_per_search: int = setting(16, "MAX_QUERIES_PER_SEARCH", "most queued queries (states of "
                                          "concurrent requests) the search worker takes in one call", ge=1)
    scan_shards: int | None = setting(None, "SCAN_SHARDS", "row ranges one search scans side by side, each in "
                                      "a thread of its own (default: 2 on two cores or more, else 1)", ge=1, le=64)
    import_mask_cache_entries: int = setting(32, "IMPORT_MASK_CACHE_ENTRIES", "distinct import lists (a file's "
                                             "imports, as Lean sends them with each request) whose premise masks "
                                             "are kept per revision, least recently used evicted first (0: off)",
                                             ge=0)
    search_threads: int | None = setting(None, "SEARCH_THREADS", "threads scoring the embeddings, faiss's and "
                                         "BLAS's (default: 1 up to 4 cores, else a quarter of them)", ge=1)

    @field_validator("*", mode="before")
    @classmethod
    def _strip_comment(cls, value):
        """`MAX_K=16  # per request` means 16, as the original server's .env read it; nothing left: default."""
        if isinstance(value, str):
            value = _COMMENT.sub("", value).strip()
            if value == "":
                raise PydanticUseDefault()
        return value

    @model_validator(mode="before")
    @classmethod
    def _cache_dir_off(cls, data):
        """`--embedding_cache ""` or `EMBEDDING_CACHE_DIR=off` turns the persistent cache off, as
        `--no_embedding_cache` does (an empty environment variable counts as unset, like any other)."""
        if isinstance(data, dict):
            for key in ("embedding_cache", env_name("embedding_cache")):
                value = data.get(key)
                if isinstance(value, str) and _COMMENT.sub("", value).strip().lower() in ("", "off", "none"):
                    data = {k: v for k, v in data.items() if k != key}
                    data["embedding_cache_on"] = False
        return data

    @field_validator("embedding_cache_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(REDIS_SCHEMES):
            raise ValueError(f"expected a Redis URL ({', '.join(REDIS_SCHEMES)}...)")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.backend == "tei" and not self.embed_service_url:
            raise ValueError("backend tei needs EMBED_SERVICE_URL (--embed_service_url)")
        key = self.embedding_cache_key.get_secret_value() if self.embedding_cache_key is not None else None
        if self.embedding_cache_on and self.embedding_cache_url and key is None:
            raise ValueError("EMBEDDING_CACHE_URL needs EMBEDDING_CACHE_KEY (a secret shared by the replicas, "
                             f"for the HMAC of cached vectors), or EMBEDDING_CACHE_KEY={INSECURE_CACHE_KEY} to "
                             "trust every value in that Redis")
        if key is not None and key != INSECURE_CACHE_KEY and len(key) < MIN_CACHE_KEY_CHARS:
            raise ValueError(f"EMBEDDING_CACHE_KEY: at least {MIN_CACHE_KEY_CHARS} characters (got {len(key)})")
        self.max_client_batch_size = min(self.max_client_batch_size, self.embed_service_max_concurrent_inputs)
        return self

    def embedding_cache_location(self) -> str | None:
        """Where the persistent embedding cache lives: the Redis URL, else the LMDB directory (by default
        under DATA_DIR, else the leanpremise cache); None when it is off."""
        from leanpremise.data.config import default_cache_dir

        if not self.embedding_cache_on:
            return None
        if self.embedding_cache_url:
            return self.embedding_cache_url
        return str(self.embedding_cache or (self.data_dir or default_cache_dir()) / "embeddings.lmdb")

    def archive_limits(self):
        """The bounds premises archives are unpacked within (bundle/archive.py)."""
        from leanpremise.bundle.archive import ArchiveLimits

        return ArchiveLimits(self.archive_max_member_bytes, self.archive_max_total_bytes,
                             self.archive_max_line_bytes, self.archive_max_members)

    def rerank_limits(self):
        """The largest reranker model a bundle may carry (rank/rerank/validate.py)."""
        from leanpremise.rank.rerank.validate import ModelLimits

        return ModelLimits(self.max_rerank_trees, self.max_rerank_leaves)

    def embedding_cache_hmac_key(self) -> bytes | None:
        """The key Redis values are tagged under; None when none is set or it is waived (`insecure-none`)."""
        key = self.embedding_cache_key.get_secret_value() if self.embedding_cache_key is not None else None
        return None if key in (None, INSECURE_CACHE_KEY) else key.encode()

    def check_source(self) -> ServeConfig:
        """Raise unless the settings say what to serve: a bundle dir, or a data repo and a model on the Hub."""
        if self.bundle is None and self.bundles:
            self.bundle, self.bundles = self.bundles[0], self.bundles[1:]
        if self.bundle is None and not (self.data_repo and self.model_id):
            raise ConfigError("give a bundle dir (BUNDLE_DIR) or --from_hub DATA_REPO@REV MODEL_REPO@REV")
        return self


def env_name(field: str) -> str:
    return ServeConfig.model_fields[field].json_schema_extra["env"]


def flag_name(field: str) -> str:
    return ServeConfig.model_fields[field].json_schema_extra["flag"] or f"--{field}"


RENAMED = {"SEARCH_BATCH_SIZE": "MAX_QUERIES_PER_SEARCH"}
"""Settings the original server read under another name: set, they would be ignored without a word."""


def renamed_settings(env_file: str | Path | None) -> list[str]:
    """A line per old setting name found in the environment or `env_file`."""
    found = {k.upper() for k in os.environ}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        found |= {k.upper() for k in dotenv_values(env_file)}
    return [f"{old} is not read: the setting is now {new}" for old, new in RENAMED.items() if old in found]


def load_config(env_file: str | Path | None = ".env", **flags) -> ServeConfig:
    """Settings from the non-None `flags`, then the environment, then `env_file`, then the defaults;
    a bad value raises :class:`ConfigError` naming its environment variable and flag. An old setting
    name (RENAMED) is warned about."""
    for line in renamed_settings(env_file):
        logging.getLogger(__name__).warning("%s", line)
    try:
        return ServeConfig(_env_file=env_file, **{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise ConfigError(describe(e)) from None


def describe(error: ValidationError) -> str:
    """One line per bad setting: `MAX_K (--max_k): Input should be a valid integer ... (got 'lots')`."""
    by_env = {f.json_schema_extra["env"].lower(): name for name, f in ServeConfig.model_fields.items()}
    parts = []
    for err in error.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        field = by_env.get(key.lower(), key)
        if field in ServeConfig.model_fields:
            names = [env_name(field), *ServeConfig.model_fields[field].json_schema_extra["old_env"]]
            where = f"{' or '.join(names)} ({flag_name(field)})"
            parts.append(f"{where}: {err['msg']} (got {err['input']!r})")
        else:
            parts.append(err["msg"].removeprefix("Value error, "))
    return "; ".join(parts)
