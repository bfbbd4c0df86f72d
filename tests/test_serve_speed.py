"""The serving speed-ups of issue 26 keep answers as they were: the static encoder's cache of tokenized
pieces gives the tokenizer's own ids (so the rows bit for bit), stays bounded, and is off for a tokenizer
that could join pieces; the in-memory embedding cache checks a request's rows together as it checked them
one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TRICKY = [
    "theorem Finset.sum_comm' {s : Finset α} (f : α → β → M) : ∑ x ∈ s, ∑ y ∈ t, f x y = ∑ y ∈ t, ∑ x ∈ s, f x y",
    "⊢ ∀ (n : ℕ), n + 0 = n",
    "h₁ : a ≤ b\nh₂ :\tb ≤ c\r\n⊢ a ≤ c",
    "[MASK] x[MASK]y [CLS]. [ SEP ] [UNK]",
    "Ça été Ünïcödé ÀÉÎ e\u0301 (\u0301x) ΣΑΣ ς",
    "lemma " + "very_long_identifier_" * 12 + " : True",  # a piece past the cached length
    "x" * 150,  # one word past WordPiece's longest
    "  two  spaces   and trailing  ",
    "",
    "中文 字符 mixed中文text",
    "a\u0000b\u001fc\u200bd",  # control and zero-width characters BERT's cleaning drops
    " ".join(f"tok{i}" for i in range(200)),  # past the truncation
]


@pytest.fixture(scope="module")
def wordpiece_model(tmp_path_factory) -> Path:
    """A static model over the packaged MiniLM's WordPiece tokenizer (BERT's normalizer and pre-tokenizer,
    special tokens, truncation at 32 tokens), random 8-dimensional token vectors."""
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    from leanpremise.model.encoder import default_model_path

    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(32)
    vectors = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("wordpiece") / "model"
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=vectors), models.Normalize()],
                        device="cpu").save(str(out))
    return out


def test_cached_pieces_give_the_tokenizers_ids_and_rows(wordpiece_model):
    from leanpremise.model.static import StaticEncoder
    from leanpremise.serve.embedding.static_tokens import PieceCachedStaticEncoder

    plain, cached = StaticEncoder(wordpiece_model), PieceCachedStaticEncoder(wordpiece_model, max_pieces=1000)
    assert cached.pattern is not None  # WordPiece with BERT's pre-tokenizer: pieces are independent
    for _ in range(2):  # cold, then every piece from the cache
        assert cached.token_ids(TRICKY) == plain.token_ids(TRICKY)
        np.testing.assert_array_equal(cached.encode(TRICKY), plain.encode(TRICKY))
        for text in TRICKY:  # one text at a time, as a goal comes
            np.testing.assert_array_equal(cached.encode([text]), plain.encode([text]))
    assert "[MASK]" in plain.tokenizer.decode(plain.token_ids(["[MASK]"])[0], skip_special_tokens=False)


def test_the_piece_cache_stays_bounded_and_correct(wordpiece_model):
    from leanpremise.model.static import StaticEncoder
    from leanpremise.serve.embedding.static_tokens import MAX_CACHED_PIECE_CHARS, PieceCachedStaticEncoder

    plain, cached = StaticEncoder(wordpiece_model), PieceCachedStaticEncoder(wordpiece_model, max_pieces=7)
    clone = cached.clone()
    assert clone.max_pieces == 7 and clone._pieces is not cached._pieces  # a worker's own cache
    for lo in range(0, len(TRICKY), 3):
        batch = TRICKY[lo : lo + 3]
        np.testing.assert_array_equal(cached.encode(batch), plain.encode(batch))
        assert len(cached._pieces) <= 7
        assert all(len(p) <= MAX_CACHED_PIECE_CHARS for p in cached._pieces)


def test_a_tokenizer_that_may_join_pieces_is_used_whole(tmp_path):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE, WordLevel

    from leanpremise.serve.embedding.static_tokens import piece_pattern

    byte_level = Tokenizer(BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()  # a space belongs to the next word's token
    assert piece_pattern(byte_level) is None
    composing = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    composing.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    composing.normalizer = normalizers.NFC()  # composes across characters
    assert piece_pattern(composing) is None
    composing.normalizer = normalizers.Lowercase()
    assert piece_pattern(composing).findall("a b(c)") == ["a", "b(c)"]  # no punctuation split for it
    composing.enable_truncation(8, direction="left")  # keeps the end: joined pieces are cut at the start
    assert piece_pattern(composing) is None


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_in_memory_cache_checks_a_requests_rows_together_as_one_by_one():
    from leanpremise.serve.embedding.cache import EmbeddingCache

    def filled():
        cache = EmbeddingCache(100, 1 << 20)
        seen: list[str] = []
        cache.on_rejected = lambda why, n: seen.extend([why] * n)
        good = _unit(np.arange(1, 17, dtype=np.float32).reshape(2, 8))
        cache.put(b"g0", good[0])
        cache.put(b"g1", good[1])
        bad = {b"nan": np.full(8, np.nan, np.float32), b"zero": np.zeros(8, np.float32),
               b"scaled": np.ones(8, np.float32), b"wide": _unit(np.ones((1, 9)))[0]}
        for key, row in bad.items():
            cache.put(key, row)
        return cache, seen

    keys = [b"g0", b"nan", b"missing", b"zero", b"g1", b"scaled", b"wide", b"g0"]
    one, seen_one = filled()
    many, seen_many = filled()
    singly = [one.get(k) for k in keys]
    together = many.get_many(keys)
    assert [r is None for r in together] == [r is None for r in singly] == [False, True, True, True, False, True,
                                                                            True, False]
    for a, b in zip(singly, together):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert sorted(seen_many) == sorted(seen_one) == ["dim", "nonfinite", "norm", "norm"]
    assert len(many) == len(one) == 2  # the bad rows are gone


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_sharded_scan_answers_as_one_scan(monkeypatch, dtype):
    """Masks allowing rows in one shard only, fewer rows than k in a shard, near-duplicates that make the
    scan fetch again, several queries at once: the same (scores, ids) as the single scan."""
    from leanpremise.serve.search import exact

    monkeypatch.setattr(exact, "MIN_SHARD_ROWS", 100)
    rng = np.random.default_rng(3)
    emb = _unit(rng.standard_normal((1000, 24)))
    emb[700:760] = _unit(emb[700] + rng.standard_normal((60, 24)).astype(np.float32) * 1e-4)
    one, three = exact.ExactSearcher(emb, dtype), exact.ExactSearcher(emb, dtype, shards=3)
    assert isinstance(three.scan, exact.ShardedScan) and len(three.scan.parts) == 3
    queries = _unit(np.concatenate([rng.standard_normal((3, 24)), emb[700:701] + 1e-3]).astype(np.float32))
    first_shard = np.zeros(1000, dtype=bool)
    first_shard[:40] = True
    spread = rng.random(1000) < 0.3
    for mask in (None, first_shard, spread):
        count = 1000 if mask is None else int(mask.sum())
        for k in (1, 50, 100):
            for (s1, i1), (s3, i3) in zip(one.topk(queries, mask, count, k), three.topk(queries, mask, count, k)):
                np.testing.assert_array_equal(i1, i3)
                np.testing.assert_array_equal(s1, s3)
    ids = np.array([999, 0, 334, 333, 667])
    np.testing.assert_array_equal(three.row_vectors(ids), one.row_vectors(ids))
    assert three.storage_error == one.storage_error


@pytest.fixture(scope="module")
def sample_corpus(sample_dataset):
    return sample_dataset.corpus


def test_positions_resolve_in_one_array_operation_as_one_by_one(sample_corpus):
    """Lean's client sends positions: the array path drops what the per-entry path drops (negative, past
    the end, beyond int64, filtered-out premises) and keeps repeats; a list with any other entry (a name, a
    bool) goes the per-entry way."""
    from leanpremise.serve.search.index import PremiseIndex

    idx = PremiseIndex(sample_corpus, np.zeros((len(sample_corpus), 4), np.float32))
    n_mod, n_prem = len(idx.indexed_modules), len(idx.indexed_premises)
    mods = [0, 3, 3, -1, n_mod, n_mod - 1, 2**70, 7]
    prems = [0, 5, 5, -2, n_prem, n_prem - 1, 2**64, 11] + list(range(0, n_prem, 97))
    slow_mods = np.array([i for i in (idx.module_id(e) for e in mods) if i is not None])
    slow_prems = idx.premise_ids(prems + ["no such premise"])  # a name: the per-entry path
    np.testing.assert_array_equal(idx.module_ids(mods), slow_mods)
    np.testing.assert_array_equal(idx.premise_ids(prems), slow_prems)
    np.testing.assert_array_equal(idx.module_ids([1, 2]), [1, 2])
    np.testing.assert_array_equal(idx.module_ids([True, 2]), [1, 2])  # a bool as before: its int value


def test_a_cached_import_mask_answers_as_one_built_afresh(sample_corpus):
    """Masks of repeated import lists come from the cache: each request's mask equals one built without a
    cache, whatever the request before added (its local premises, its overridden names) or hid (the module
    system); a cache of one entry evicts and rebuilds; a shared mask cannot be written to."""
    from leanpremise.serve.search.index import PremiseIndex

    emb = np.zeros((len(sample_corpus), 4), np.float32)
    fresh = PremiseIndex(sample_corpus, emb, mask_cache_entries=0)
    n_mod, n_prem = len(fresh.indexed_modules), len(fresh.indexed_premises)
    rng = np.random.default_rng(0)
    files = [rng.choice(n_mod, size=n_mod // 3, replace=False).tolist() for _ in range(3)]
    files.append([fresh.indexed_modules[i] for i in files[0]])  # the same closure by name
    names = list(sample_corpus.names)
    requests = []
    for i in range(40):
        imported = files[i % len(files)] if i % 7 else None
        local = rng.choice(n_prem, size=int(rng.integers(0, 30)), replace=False).tolist() if i % 3 else None
        overridden = [names[j] for j in rng.choice(len(names), size=2).tolist()] if i % 4 == 0 else []
        system = i % 5 == 0
        opened = files[(i + 1) % 3][:10] if system else None
        requests.append((imported, local, system, opened, overridden))
    for entries in (32, 1):
        cached = PremiseIndex(sample_corpus, emb, mask_cache_entries=entries)
        for _ in range(2):  # the second pass all from the cache (32) or evicting each time (1)
            for r in requests:
                want, got = fresh.import_mask(*r), cached.import_mask(*r)
                assert got.count == want.count
                if want.mask is None:
                    assert got.mask is None
                else:
                    np.testing.assert_array_equal(got.mask, want.mask)
    shared = cached.import_mask(files[1], None)
    assert shared.mask is cached.import_mask(files[1], None).mask
    with pytest.raises(ValueError):
        shared.mask[0] = True


def test_an_inline_embedder_embeds_in_chunks_of_inline_chunk_and_yields_between():
    """A static-like (inline) embedder gets a large request's texts in chunks of INLINE_CHUNK, another
    request's goal is embedded between two of them (before the large request ends), and every row lands at
    each of its text's positions (a text repeated within the request included)."""
    import asyncio

    from leanpremise.serve.embedding.service import EmbeddingService
    from serve_helpers import service_config

    calls: list[list[str]] = []

    class Inline:
        dim, name, batches_well, inline = 3, "inline", False, True

        def encode(self, texts):
            calls.append(list(texts))
            return np.array([[float(t.split("#")[-1]), 1.0, 0.0] for t in texts], dtype=np.float32)

    async def run():
        svc = EmbeddingService(Inline(), service_config(inline_chunk=50))
        await svc.start()
        try:
            premises = [f"p#{i}" for i in range(230)] + ["p#7", "p#3"]
            big = asyncio.ensure_future(svc.embed(["g#1000"], premises))
            await asyncio.sleep(0)  # the large request has embedded its first chunk
            goal, _ = await svc.embed(["g#2000"], [])
            assert not big.done()
            states, rows = await big
        finally:
            await svc.stop()
        return goal, states, rows, premises

    goal, states, rows, premises = asyncio.run(run())
    assert max(len(c) for c in calls) == 50
    assert ["g#2000"] in calls[1:-1]  # between two chunks of the large request
    assert goal[0, 0] == 2000 and states[0, 0] == 1000
    np.testing.assert_array_equal(rows[:, 0], [float(p.split("#")[-1]) for p in premises])
