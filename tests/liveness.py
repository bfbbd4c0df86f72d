"""The one bound tests put on waiting: long enough that a slow or busy machine never trips it, so a test
fails for what the code does, never for how fast the machine is. Speed targets live in benchmarks/."""

LIVENESS_S = 300.0
"""Seconds a test waits for an answer, a server start or a thread before calling it stuck."""
