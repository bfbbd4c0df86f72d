"""Fixtures for tests and benchmarks that are not test code themselves (a synthetic next revision)."""
