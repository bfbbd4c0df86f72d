"""Learned re-ranking: the candidates of every ranker and of the request's own file, described by features a
server can compute from the request and its bundle, scored by a learning-to-rank model.

`features` is the one place a feature is computed (evaluation and serving both call it), `premises` the
per-premise columns it reads, `spec` the reranker directory's `reranker.json`, `model` loading and applying
the trained model. Training (which needs the states' positives) is evaluation's: `leanpremise.eval.rerank`.
"""
