"""Incremental detokenization: stable, never half a character, equal to a full decode."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from inference.text.detokenizer import IncrementalDetokenizer
from inference.text.tokenizer import Tokenizer

ALPHABET = [
    *"abcdefghijklmnopqrstuvwxyz      ,.!?\n",
    *"éèçñüößøåłźżąę",
    *"水门河流日本語の中文字한국어",
    "🌊", "⛵", "🐟", "👍🏽", "👨‍👩‍👧", "🇫🇷", "𝔘", "ꙮ", "\u0301", "€", "∑",
]  # fmt: skip


class CountingTokenizer:
    """Records the longest id list each decode call sees (the window size)."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.longest = 0
        self.calls = 0

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.calls += 1
        self.longest = max(self.longest, len(token_ids))
        return self.inner.decode(token_ids, skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_llama_dir"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    directory: Path = request.getfixturevalue(request.param)
    return Tokenizer.from_dir(directory)


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60)))


def test_token_by_token_never_emits_half_characters(tok: Tokenizer) -> None:
    rng = random.Random(7)
    split_seen = 0
    for _ in range(300):
        prompt = tok.encode(random_text(rng))
        text = random_text(rng)
        ids = tok.encode(text, add_special_tokens=False)
        split_seen += any(tok.decode_token(i) == "\ufffd" for i in ids)
        detok = IncrementalDetokenizer(tok, prompt)
        pieces = [detok.push([token]) for token in ids]
        assert all("\ufffd" not in piece for piece in pieces)
        assert detok.flush() == ""
        assert "".join(pieces) == detok.text == tok.decode(ids) == text
    assert split_seen > 50  # the property was really exercised on split characters


def test_chunked_pushes_equal_full_decode(tok: Tokenizer) -> None:
    rng = random.Random(11)
    for _ in range(100):
        text = random_text(rng) * 3
        ids = tok.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tok, [])
        position, out = 0, []
        while position < len(ids):
            size = rng.randint(1, 4)
            out.append(detok.push(ids[position : position + size]))
            position += size
        assert "\ufffd" not in "".join(out)
        assert "".join(out) + detok.flush() == text


def test_first_token_keeps_its_leading_space(tok: Tokenizer) -> None:
    prompt = tok.encode("The gate")
    completion = tok.encode(" opens slowly", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, prompt)
    assert detok.push(completion[:1]).startswith(" ")
    detok.push(completion[1:])
    assert detok.flush() == ""
    assert detok.text == " opens slowly"


def test_special_tokens_are_skipped(tok: Tokenizer) -> None:
    eos = tok.eos_token_id
    assert eos is not None
    detok = IncrementalDetokenizer(tok, [])
    assert detok.push(tok.encode("ok", add_special_tokens=False)) == "ok"
    assert detok.push([eos]) == ""
    kept = IncrementalDetokenizer(tok, [], skip_special_tokens=False)
    assert kept.push([*tok.encode("ok", add_special_tokens=False), eos]) == "ok<|endoftext|>"


def test_window_stays_small_on_long_outputs(tok: Tokenizer) -> None:
    rng = random.Random(3)
    text = "".join(random_text(rng) for _ in range(80))
    ids = tok.encode(text, add_special_tokens=False)
    counting = CountingTokenizer(tok)
    detok = IncrementalDetokenizer(counting, tok.encode("prompt " * 50))
    for token in ids:
        detok.push([token])
    assert detok.text + detok.flush() == text
    assert len(ids) > 1000
    assert counting.longest <= 24  # bounded window: O(1) work per token
    assert counting.calls <= 3 * len(ids) + 2


def test_garbage_tokens_stay_bounded_and_match_full_decode(tok: Tokenizer) -> None:
    # An untrained model emits arbitrary ids, including runs of stray UTF-8 bytes.
    rng = random.Random(5)
    lone_bytes = [i for i in range(tok.vocab_size) if tok.decode_token(i) == "\ufffd"]
    for _ in range(30):
        ids = [
            rng.choice(lone_bytes) if rng.random() < 0.7 else rng.randrange(tok.vocab_size)
            for _ in range(200)
        ]
        counting = CountingTokenizer(tok)
        detok = IncrementalDetokenizer(counting, [])
        streamed = "".join(detok.push([token]) for token in ids) + detok.flush()
        assert counting.longest <= 24
        assert streamed == tok.decode(ids)


class ByteChunkTokenizer:
    """A byte-level tokenizer whose tokens are arbitrary byte chunks of one text."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.longest = 0

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.longest = max(self.longest, len(token_ids))
        return b"".join(self.chunks[i] for i in token_ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("first", [1, 2])
def test_token_boundaries_never_on_character_boundaries(first: int) -> None:
    # Every token boundary falls inside a 3-byte character, so the text always ends in an
    # unfinished character: the window must still stay short and the output exact.
    text = "水门河流日本語の中文字" * 40
    data = text.encode("utf-8")
    chunks = [data[:first]] + [data[i : i + 3] for i in range(first, len(data), 3)]
    fake = ByteChunkTokenizer(chunks)
    detok = IncrementalDetokenizer(fake, [])
    pieces = [detok.push([token]) for token in range(len(chunks))]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + detok.flush() == text
    assert fake.longest <= 24
