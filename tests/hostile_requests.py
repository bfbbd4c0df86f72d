"""A corpus of hostile or merely odd requests to the premise server, sent over raw sockets so that a case
can send a body slowly, lie about its length, or go away mid-body. Used by tests/test_serve_hostile.py
(against a server on loopback) and by benchmarks/serve_hostile.py (in a loop beside honest clients).

Each case says which answers are acceptable: HTTP status codes, or CLOSED where the server should close
the connection without an answer (headers too slow) and GONE where the client leaves without reading one.
The expectations assume the server's default limits, except the time limits, which a replaying server
sets short (HOSTILE_ENV) so that a slow case ends within a few seconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from liveness import LIVENESS_S

CLOSED = "closed"
GONE = "gone"

HOSTILE_ENV = {"BODY_TIMEOUT_S": "2", "HEADER_TIMEOUT_S": "2"}
"""Time limits of a server replaying this corpus: its slow cases take this long, not the defaults."""

MB = 2**20


@dataclass
class Case:
    name: str
    expected: frozenset
    body: bytes = b""
    method: str = "POST"
    path: str = "/retrieve"
    headers: dict = field(default_factory=dict)
    chunked: bool = False
    """Send the body with Transfer-Encoding: chunked (no Content-Length to refuse it by)."""
    declared_length: int | None = None
    """Content-Length to claim (default: the body's length)."""
    send_bytes: int | None = None
    """Send only this many body bytes, then close without reading an answer (a client going away)."""
    byte_delay: float = 0.0
    """Seconds between body bytes (a slow body)."""
    header_delay: float = 0.0
    """Seconds between header bytes (slow headers)."""
    chunk_size: int = 256 * 1024
    """Body bytes per chunk of a chunked body (small: a chunk storm)."""
    chunk_ext: str = ""
    """A chunk extension sent with every chunk (`;name=value`: wire bytes that are not body)."""


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _unique(n: int, length: int, tag: str) -> list[str]:
    """`n` distinct names of `length` characters (fresh each call: nothing a cache could have seen)."""
    salt = os.urandom(6).hex()
    return [f"{tag}.{salt}.{i}.".ljust(length, "x") for i in range(n)]


GOAL = "a b c : ℕ\nh : a ≤ b\n⊢ a + c ≤ b + c"
DECL = "theorem Nat.add_le_add_right {n m : ℕ} (h : n ≤ m) (k : ℕ) : n + k ≤ m + k"


def _premises_body(n: int = 2048) -> bytes:
    return _json({"state": GOAL, "k": 100, "new_premises": [{"name": f"My.thm{i}", "decl": f"{DECL} -- {i}"}
                                                             for i in range(n)]})


def cases() -> list[Case]:
    """The corpus, built afresh (its unique names differ on each call)."""
    ok, bad = frozenset({200}), frozenset({422})
    closure = list(range(8500))
    return [
        # ---- sizes ---------------------------------------------------------------------------------
        Case("state of 50 MB (Content-Length)", frozenset({413}), _json({"state": "x" * (50 * MB), "k": 8})),
        Case("state of 50 MB (chunked)", frozenset({413}), _json({"state": "x" * (50 * MB), "k": 8}), chunked=True),
        Case("Content-Length of 1 TB, few bytes sent", frozenset({413}), b'{"state": "x"',
             declared_length=2**40),
        Case("state over MAX_STATE_CHARS", bad, _json({"state": GOAL * 4000, "k": 8})),
        Case("long state within the limit (cut before tokenising)", ok, _json({"state": GOAL * 2500, "k": 8})),
        Case("200 decls of 60,000 characters", bad,
             _json({"state": GOAL, "k": 8, "new_premises": [{"name": f"n{i}", "decl": "y" * 60000}
                                                             for i in range(200)]})),
        Case("8 decls of 40,000 characters", ok,
             _json({"state": GOAL, "k": 8, "new_premises": [{"name": f"n{i}", "decl": f"{i} " + DECL * 500}
                                                             for i in range(8)]})),
        Case("2,048 realistic new premises", ok, _premises_body()),
        Case("5,000 unique module names of 2,000 characters", ok,
             _json({"state": GOAL, "k": 8, "imported_modules": _unique(5000, 2000, "M")})),
        Case("one module name of 3,000 characters", bad,
             _json({"state": GOAL, "k": 8, "imported_modules": ["Mathlib." + "x" * 3000]})),
        Case("a path of 1,000 folders", ok,
             _json({"state": GOAL, "k": 8, "imported_modules": ["a/" * 1000 + "Basic.lean"]})),
        Case("one long and 30,000 short module names", ok,
             _json({"state": GOAL, "k": 8, "imported_modules": ["L" * 2000] + ["a"] * 30000})),
        Case("40,000 local premises", bad, _json({"state": GOAL, "k": 8, "local_premises": list(range(40000))})),
        Case("import closure of Mathlib as positions", ok,
             _json({"state": GOAL, "k": 100, "imported_modules": closure, "imported_all_modules": closure})),
        Case("import closure as names", ok,
             _json({"state": GOAL, "k": 100, "imported_modules": [f"Mathlib.Area{i // 100}.File{i}" for i in closure]})),
        Case("1,000 states x k=1024", bad, _json({"state": [GOAL] * 1000, "k": 1024})),
        Case("64 states x k=1024 (results over MAX_RESULTS)", bad, _json({"state": [GOAL] * 64, "k": 1024})),
        Case("16 states x k=1024", ok, _json({"state": [f"{GOAL} {i}" for i in range(16)], "k": 1024})),
        Case("minimal third-party body", ok, _json({"state": GOAL, "new_premises": [], "k": 8})),
        # ---- time and connections ---------------------------------------------------------------------
        Case("slow body (a byte every 0.3 s)", frozenset({408}), _json({"state": GOAL, "k": 8}), byte_delay=0.3),
        Case("slow headers (a byte every 0.3 s)", frozenset({CLOSED}), b"", method="GET", path="/health",
             header_delay=0.3),
        Case("client goes away mid-body", frozenset({GONE}), _json({"state": "x" * 100000, "k": 8}),
             send_bytes=20000),
        Case("slow headers, then a slow body", frozenset({408}), _json({"state": GOAL, "k": 8}),
             header_delay=0.005, byte_delay=0.3),
        # ---- chunk storms: refused after MAX_BODY_CHUNKS (+1 per KiB) chunks, or by wire bytes -------
        *[Case(f"1 MB in {size}-byte chunks", frozenset({400}), _json({"state": GOAL, "k": 8, "pad": "p" * MB}),
               chunked=True, chunk_size=size) for size in (1, 16, 256)],
        Case("2,048 new premises in 4 KiB chunks", ok, _premises_body(), chunked=True, chunk_size=4096),
        Case("chunks with 16 KB extensions", frozenset({413}), _json({"state": GOAL, "k": 8, "pad": "p" * (2 * MB)}),
             chunked=True, chunk_size=1024, chunk_ext=";x=" + "e" * 16000),
        # ---- types and encodings ------------------------------------------------------------------------
        Case("k as a string", bad, b'{"state": "a", "k": "8"}'),
        Case("state as a number", bad, b'{"state": 5, "k": 8}'),
        Case("new_premises as a string", bad, b'{"state": "a", "k": 8, "new_premises": "x"}'),
        Case("state nested 100,000 deep", bad, b'{"state": ' + b"[" * 100000 + b"]" * 100000 + b', "k": 8}'),
        Case("k = 1e400", bad, b'{"state": "a", "k": 1e400}'),
        Case("k with 5,000 digits", frozenset({200, 422}), b'{"state": "a", "k": ' + b"9" * 5000 + b"}"),
        Case("k = -10**30", ok, b'{"state": "a", "k": -1000000000000000000000000000000}'),
        Case("module position 10**30", ok,
             b'{"state": "a", "k": 8, "imported_modules": [1000000000000000000000000000000, -5]}'),
        Case("invalid UTF-8", bad, b'{"state": "\xff\xfe\xfd", "k": 8}'),
        Case("lone surrogates in state, name and decl", bad,
             b'{"state": "\\ud800 x", "k": 8, "new_premises": [{"name": "\\udc00", "decl": "\\ud800"}]}'),
        Case("NUL characters", ok, _json({"state": "\u0000" * 5000, "k": 8})),
        Case("not JSON", bad, b"hello"),
        Case("empty body", bad, b""),
        Case("JSON null", bad, b"null"),
        Case("a million empty objects", frozenset({413, 422}), b"[" + b"{}," * 1_000_000 + b"{}]"),
        Case("bad Content-Length", frozenset({400}), b"{}", headers={"Content-Length": "12abc"}),
        Case("1 MB of headers", frozenset({400, 431, CLOSED}), b"{}", headers={"X-Junk": "j" * 2**20}),
        Case("GET /retrieve", frozenset({405}), method="GET"),
        Case("/docs is off", frozenset({404}), method="GET", path="/docs"),
        Case("/openapi.json is off", frozenset({404}), method="GET", path="/openapi.json"),
    ]


def send_case(case: Case, host: str, port: int, timeout: float = LIVENESS_S) -> tuple[object, float]:
    """Play `case` against the server; (the status code, CLOSED or GONE; seconds taken)."""
    t0 = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        outcome = _play(sock, case)
    finally:
        sock.close()
    return outcome, time.perf_counter() - t0


def _head(case: Case) -> bytes:
    headers = {"Host": "127.0.0.1", "Content-Type": "application/json", "Connection": "close"}
    if case.chunked:
        headers["Transfer-Encoding"] = "chunked"
    elif case.method == "POST" or case.body:
        length = case.declared_length if case.declared_length is not None else len(case.body)
        headers["Content-Length"] = str(length)
    headers.update(case.headers)
    lines = [f"{case.method} {case.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _body_pieces(case: Case):
    body = case.body if case.send_bytes is None else case.body[: case.send_bytes]
    if case.byte_delay:
        yield from (body[i : i + 1] for i in range(len(body)))
        return
    if case.chunked:  # framed whole, then sent in large writes: the chunks' count costs the server, not us
        size, ext = case.chunk_size, case.chunk_ext.encode()
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(body[i : i + size]), ext, body[i : i + size])
                        for i in range(0, len(body), size)) + b"0\r\n\r\n"
    step = 256 * 1024
    for i in range(0, len(body), step):
        yield body[i : i + step]


def _play(sock: socket.socket, case: Case):
    """Send in a thread while this one reads, so that an early answer (413 while the body is still being
    sent) is read before the server closes the connection."""
    stop = threading.Event()

    def sender():
        try:
            head = _head(case)
            if case.header_delay:
                for i in range(len(head)):
                    if stop.is_set():
                        return
                    sock.sendall(head[i : i + 1])
                    time.sleep(case.header_delay)
            else:
                sock.sendall(head)
            for piece in _body_pieces(case):
                if stop.is_set():
                    return
                sock.sendall(piece)
                if case.byte_delay:
                    time.sleep(case.byte_delay)
        except OSError:
            pass  # the server answered and closed: what the reader sees decides

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    if case.send_bytes is not None:
        thread.join()
        return GONE
    try:
        status = _read_status(sock)
    finally:
        stop.set()
    return status


def _read_status(sock: socket.socket):
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    if not data.startswith(b"HTTP/"):
        return CLOSED
    return int(data.split(b" ", 2)[1])
