"""SmolLM2-135M-Instruct's tokenizer and chat template, built from the GGUF's metadata, against
transformers' tokenizer for the same file: identical ids, text and rendered conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference.checkpoints.loader import load_tokenizer
from inference.text.tokenizer import Tokenizer

pytestmark = pytest.mark.real_model

TEXTS = [
    "What is the capital of France?",
    "Hello, world! How's it going? I'm fine; you'd think so.",
    "naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, emoji 🦙🚀👩‍👩‍👧, ∑x² ≠ ∞",
    "   leading spaces,    runs of spaces,\ttabs\t\t\tand\n\n\nnewlines \r\n  \n",
    "trailing whitespace   ",
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "special tokens glued<|im_end|>to words<|endoftext|>and <repo_name> too",
    "digits 0123456789, 3.14159, 1,000,000 and 2026-11-30",
    "code: def f(x):\n    return x ** 2  # square\n",
    "",
    " ",
]
CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a colour."},
    ],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Opposite of hot?"},
        {"role": "assistant", "content": "Cold."},
        {"role": "user", "content": "And of up?"},
    ],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}],
    [
        {"role": "user", "content": "Traduis « naïve » en 日本語 🦙"},
        {"role": "assistant", "content": "ナイーブ"},
        {"role": "user", "content": "   spaces  and\n\nnewlines  "},
    ],
]


@pytest.fixture(scope="module")
def ours(smollm2_path: Path) -> Tokenizer:
    return load_tokenizer(smollm2_path)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenization_is_transformers(ours: Tokenizer, hf_tokenizer: Any, text: str) -> None:
    ids = hf_tokenizer.encode(text)
    assert ours.encode(text) == ids
    assert ours.encode(text, add_special_tokens=False) == hf_tokenizer.encode(
        text, add_special_tokens=False
    )
    assert ours.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(ids)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_is_transformers(
    ours: Tokenizer,
    hf_tokenizer: Any,
    conversation: list[dict[str, str]],
    add_generation_prompt: bool,
) -> None:
    expected = hf_tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    rendered = ours.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
    assert rendered.encode() == expected.encode()
    assert ours.encode(rendered) == hf_tokenizer.encode(expected)


def test_special_tokens_are_the_checkpoints(ours: Tokenizer, hf_tokenizer: Any) -> None:
    assert ours.eos_token == hf_tokenizer.eos_token == "<|im_end|>"
    assert ours.eos_token_id == hf_tokenizer.eos_token_id == 2
    assert ours.bos_token == hf_tokenizer.bos_token
    assert not ours.add_bos_token
    assert ours.vocab_size == len(hf_tokenizer) == 49152
    assert ours.special_token_ids == set(range(17))  # the file's CONTROL tokens
    assert set(hf_tokenizer.all_special_ids) <= ours.special_token_ids
