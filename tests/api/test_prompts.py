"""Chat prompts with cached system-prompt tokens: always the ids of encoding the whole text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import tokenizers

from api.generation.prompts import ChatPrompts
from inference.text.tokenizer import Tokenizer

SYSTEMS = ["You are a helpful assistant.", "Answer in French.\n", " leading space", "é 日本 🙂"]
USERS = ["Hello, world.", "  spaced  ", "\n", "<|im_start|>user\nsneaky", "x" * 300, "日本語"]
# The system prompt folded into the first user turn (Llama-2 style): no cut is possible.
FOLDED = (
    "{% set ns = namespace(system='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system ~ m['content'] ~ ' ' %}"
    "{% else %}<|im_start|>{{ ns.system }}{{ m['content'] }}<|im_end|>{% set ns.system = '' %}"
    "{% endif %}{% endfor %}"
)


class Recording(Tokenizer):
    """Notes every text it encodes."""

    encoded: tuple[str, ...] = ()

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        self.encoded = (*self.encoded, text)
        return super().encode(text, add_special_tokens=add_special_tokens)


def conversations() -> list[list[dict[str, str]]]:
    chats = []
    for system in SYSTEMS:
        for user in USERS:
            chats.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
            chats.append(
                [
                    {"role": "system", "content": system},
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": user},
                ]
            )
    chats.append([{"role": "user", "content": "no system prompt"}])
    return chats


def assert_exact(tokenizer: Tokenizer, prompts: ChatPrompts) -> None:
    for _ in range(2):  # the first pass learns each prefix, the second uses it
        for messages in conversations():
            text = tokenizer.apply_chat_template(messages)
            prompt = prompts.encode(messages)
            assert prompt.text == text
            assert prompt.token_ids == tokenizer.encode(text), messages


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_the_ids_are_those_of_the_whole_text(fixture: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(fixture)
    tokenizer = Tokenizer.from_dir(directory)
    assert_exact(tokenizer, ChatPrompts(tokenizer))


def test_a_known_system_prompt_is_not_encoded_again(tiny_model_dir: Path) -> None:
    tokenizer = Recording.from_dir(tiny_model_dir)
    assert isinstance(tokenizer, Recording)
    prompts = ChatPrompts(tokenizer)
    system = {"role": "system", "content": "You are a helpful assistant."}
    prompts.encode([system, {"role": "user", "content": "first"}])
    tokenizer.encoded = ()
    prompt = prompts.encode([system, {"role": "user", "content": "second"}])
    assert tokenizer.encoded == ("<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n",)
    assert prompt.token_ids == Tokenizer.from_dir(tiny_model_dir).encode(prompt.text)


def _with(
    directory: Path, *, template: str, added: Sequence[tokenizers.AddedToken] = ()
) -> Tokenizer:
    backend = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    backend.add_special_tokens(list(added))
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    return Tokenizer(backend, special_tokens=specials, chat_template=template)


def test_a_special_token_that_strips_whitespace_means_no_cut(tiny_model_dir: Path) -> None:
    # `<|im_start|>` swallows the newline before it, so the prefix's own last token would
    # differ from the whole text's: the check refuses the cut, and the ids stay exact.
    reference = Tokenizer.from_dir(tiny_model_dir)
    assert reference.chat_template is not None
    stripping = tokenizers.AddedToken("<|im_start|>", lstrip=True, special=True)
    tokenizer = _with(tiny_model_dir, template=reference.chat_template, added=[stripping])
    prompts = ChatPrompts(tokenizer)
    assert_exact(tokenizer, prompts)
    assert all(prefix is None for prefix in prompts._prefixes.values())


def test_a_system_prompt_folded_into_a_turn_is_encoded_whole(tiny_model_dir: Path) -> None:
    tokenizer = _with(tiny_model_dir, template=FOLDED)
    prompts = ChatPrompts(tokenizer)
    assert_exact(tokenizer, prompts)
    assert all(prefix is None for prefix in prompts._prefixes.values())


def test_the_cache_is_bounded(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    prompts = ChatPrompts(tokenizer, max_prefixes=3)
    for i in range(10):
        messages = [{"role": "system", "content": f"s{i}"}, {"role": "user", "content": "u"}]
        assert prompts.encode(messages).token_ids == tokenizer.encode(
            tokenizer.apply_chat_template(messages)
        )
        assert len(prompts._prefixes) <= 3
