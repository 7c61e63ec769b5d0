"""Incremental detokenization: stable text deltas from a growing list of token ids.

Byte-level BPE splits multibyte characters across tokens, and SentencePiece decoders
change a token's text depending on the token before it, so a token cannot be decoded on
its own. As vLLM does, we decode a small window of recent tokens twice (with and without
the new ones) and emit the difference; text ending in U+FFFD is an incomplete character
and is held back until the tokens that complete it arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_REPLACEMENT = "\ufffd"
# Prompt tokens decoded as left context so the first output token gets its leading space.
_PROMPT_CONTEXT = 5
# A window this many tokens past its last character boundary is rebased (see `_rebase`).
_MAX_PENDING = 16


class Decoder(Protocol):
    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns one completion's tokens into text deltas that never split a character.

    Cost per token is two decodes of a window of a few tokens: the window restarts at the
    last token boundary that is also a character boundary, so it stays short.
    """

    def __init__(
        self,
        tokenizer: Decoder,
        prompt_token_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        # `_window` holds the context tokens then the unsettled ones; `_read` is where the
        # tokens not yet fully reflected in emitted text start.
        self._window: list[int] = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        self._read = len(self._window)
        self._emitted_chars = len(self._decode(self._window).rstrip(_REPLACEMENT))
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._parts)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add new tokens; return the text they make stable (possibly empty)."""
        delta = "".join([self._step(token_id) for token_id in token_ids])
        if delta:
            self._parts.append(delta)
        return delta

    def flush(self) -> str:
        """Emit whatever is still held back (an unfinished character becomes U+FFFD)."""
        delta = self._decode(self._window)[self._emitted_chars :]
        self._restart()
        if delta:
            self._parts.append(delta)
        return delta

    def _step(self, token_id: int) -> str:
        self._window.append(token_id)
        text = self._decode(self._window)
        # Text before a trailing run of U+FFFD cannot change any more: emit it now.
        stable = text.rstrip(_REPLACEMENT)
        delta = stable[self._emitted_chars :]
        self._emitted_chars = max(self._emitted_chars, len(stable))
        if len(stable) == len(text):
            self._slide()
        elif len(self._window) - self._read > _MAX_PENDING and not self._rebase():
            delta += text[self._emitted_chars :]
            self._restart()
        return delta

    def _slide(self) -> None:
        """The window ends on a character boundary: its new tokens become the context."""
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._emitted_chars = len(self._decode(self._window))

    def _rebase(self) -> bool:
        """Shorten a window whose text has ended in U+FFFD for many tokens in a row.

        That happens when token boundaries keep falling inside characters (or an untrained
        model emits stray bytes). The window restarts at the latest token whose suffix
        decodes to at least one real character: UTF-8 resynchronises at that character, so
        the new window's text from there on, unfinished tail included, matches the old one,
        and everything before its tail has been emitted already. Returns False when no
        suffix holds a real character (only stray bytes).
        """
        for cut in range(len(self._window) - 1, 0, -1):
            stable = self._decode(self._window[cut:]).rstrip(_REPLACEMENT)
            if stable:
                self._window = self._window[cut:]
                self._read = 0
                self._emitted_chars = len(stable)
                return True
        return False

    def _restart(self) -> None:
        self._window = []
        self._read = 0
        self._emitted_chars = 0

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special)
