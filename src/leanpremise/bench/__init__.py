"""LeanHammer's tactic benchmark: the harness around `lake exe tactic_benchmark` and its results summary."""
