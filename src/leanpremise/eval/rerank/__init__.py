"""Training and applying the reranker on a data dir's states: for each state the request a Lean client would
send (`requests`), every ranker's lists for it (`signals`), then the features of `leanpremise.rank.rerank`
and a learning-to-rank model (`train`) or a trained one (`apply`)."""
