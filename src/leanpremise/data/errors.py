"""Errors raised for input that is not an ntp-toolkit extraction."""


class DataLayoutError(Exception):
    """A data dir, or a required file in it, is missing or unusable; the message names the path."""
