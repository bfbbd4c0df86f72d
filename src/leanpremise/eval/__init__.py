"""Evaluation: metrics, ranking over accessible premises, the evaluator, retrieval files and baselines."""
