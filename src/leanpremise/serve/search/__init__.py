"""Answering a request: its candidates, the exact search over the corpus rows, the search worker, shared
rows of several revisions, and fusion with the lexical rankers."""
