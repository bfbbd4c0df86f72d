"""Every ranker and how rankings are combined: dense search, BM25, MePo, the usage prior, fusion and
re-ranking. Evaluation, export and serving all call these; this layer imports none of them."""
