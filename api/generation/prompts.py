"""A conversation as token ids: the model's chat template, with system prompts' tokens cached.

Most traffic repeats its system prompt on every request, often a long one, and tokenizing
it again each time is the largest cost of planning a chat request. The conversation is
still rendered whole by the template (templates are not compositional: one may fold the
system prompt into the first user turn), but when the rendered text starts with the
rendered system messages, and the rest starts with a special token, the ids are the cached
prefix's followed by those of the rest. That is exact: a tokenizer splits its input at
special (added) tokens first and encodes the pieces apart, so no token spans the cut.

Each prefix is checked once against a whole encoding before it is used (whitespace-
stripping added tokens, for one, would break the rule); templates or tokenizers for which
the check fails simply encode whole, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.generation.openai_render import PromptInfo
from inference.text.tokenizer import Tokenizer

SYSTEM_ROLES = ("system", "developer")
Messages = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class _Prefix:
    text: str  # the system messages as the template renders them (no generation prompt)
    token_ids: tuple[int, ...]
    boundary: str  # the special token the rest started with when the cut was checked


class ChatPrompts:
    """One model's conversations as prompts; keeps up to `max_prefixes` system prompts."""

    def __init__(self, tokenizer: Tokenizer, *, max_prefixes: int = 256) -> None:
        self._tokenizer = tokenizer
        self._max_prefixes = max_prefixes
        self._prefixes: dict[tuple[tuple[str, str], ...], _Prefix | None] = {}
        specials = [tokenizer.decode_token(i) for i in sorted(tokenizer.special_token_ids)]
        # An added token that holds another one could match across the cut: no caching.
        self._boundaries = tuple(
            token
            for token in specials
            if token and not any(token in other and token != other for other in specials)
        )

    def encode(self, messages: Messages) -> PromptInfo:
        """Render and tokenize; raises `ValueError` for a conversation the template refuses."""
        text = self._tokenizer.apply_chat_template(messages)
        system = 0
        while system < len(messages) and messages[system]["role"] in SYSTEM_ROLES:
            system += 1
        if system == 0 or system == len(messages):
            return PromptInfo(self._tokenizer.encode(text), text)
        key = tuple((m["role"], m["content"]) for m in messages[:system])
        if key not in self._prefixes:
            return PromptInfo(self._learn(key, messages[:system], text), text)
        prefix = self._prefixes[key]
        cut = len(prefix.text) if prefix is not None else 0
        if (
            prefix is None
            or not text.startswith(prefix.text)
            or not text.startswith(prefix.boundary, cut)
        ):
            return PromptInfo(self._tokenizer.encode(text), text)
        rest = self._tokenizer.encode(text[cut:], add_special_tokens=False)
        return PromptInfo([*prefix.token_ids, *rest], text)

    def _learn(self, key: tuple[tuple[str, str], ...], system: Messages, text: str) -> list[int]:
        """Encode `text` whole, and remember its system prefix if cutting there is exact."""
        whole = self._tokenizer.encode(text)
        if len(self._prefixes) >= self._max_prefixes:
            self._prefixes.clear()  # bounded; a refill costs one extra encoding per prompt
        self._prefixes[key] = self._checked_prefix(system, text, whole)
        return whole

    def _checked_prefix(self, system: Messages, text: str, whole: list[int]) -> _Prefix | None:
        try:
            prefix = self._tokenizer.apply_chat_template(system, add_generation_prompt=False)
        except ValueError:  # a template that wants more than system messages
            return None
        if not prefix or not text.startswith(prefix):
            return None
        boundary = next((b for b in self._boundaries if text.startswith(b, len(prefix))), None)
        if boundary is None:
            return None
        ids = self._tokenizer.encode(prefix)
        rest = self._tokenizer.encode(text[len(prefix) :], add_special_tokens=False)
        if [*ids, *rest] != whole:
            return None
        return _Prefix(prefix, tuple(ids), boundary)
