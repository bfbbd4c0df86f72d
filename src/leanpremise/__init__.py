"""leanpremise: train, evaluate, export and serve the premise selector behind LeanHammer."""

__version__ = "0.1.0"
