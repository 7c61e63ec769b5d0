"""A checkpoint's tokenizer: Hugging Face `tokenizers` plus `tokenizer_config.json`.

Encoding, decoding and the chat template behave as `transformers` does for the same
checkpoint, without importing `transformers`: the chat template is rendered with jinja2 in
an immutable sandbox with the same globals Hugging Face provides (`raise_exception`,
`strftime_now`, a non-ASCII-preserving `tojson`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import tokenizers
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class Tokenizer:
    """Text <-> token ids for one checkpoint, and its chat template.

    `encode` adds no special tokens except a leading BOS when the checkpoint asks for one
    (`add_bos_token` in `tokenizer_config.json`, or a post-processor that prepends it, as
    Llama's do); the BOS is not doubled when the text already starts with it (chat templates
    often render `{{ bos_token }}` themselves).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        special_tokens: Mapping[str, str] | None = None,
        chat_template: str | None = None,
        add_bos_token: bool | None = None,
        extra_eos_token_ids: Sequence[int] = (),
    ) -> None:
        self._backend = backend
        self.special_tokens: dict[str, str] = dict(special_tokens or {})
        self.chat_template = chat_template
        self.bos_token_id = self._id_of(self.special_tokens.get("bos_token"))
        tokenizer_eos = self._id_of(self.special_tokens.get("eos_token"))
        self.eos_token_ids: set[int] = set(extra_eos_token_ids)
        if tokenizer_eos is not None:
            self.eos_token_ids.add(tokenizer_eos)
        self.eos_token_id: int | None = (
            tokenizer_eos if tokenizer_eos is not None else next(iter(extra_eos_token_ids), None)
        )
        if add_bos_token is None:
            add_bos_token = self._post_processor_adds_bos()
        self.add_bos_token = add_bos_token and self.bos_token_id is not None
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.special_token_ids: set[int] = {
            index for index, token in backend.get_added_tokens_decoder().items() if token.special
        }
        self._template: jinja2.Template | None = (
            _compile_template(chat_template) if chat_template else None
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`."""
        directory = Path(path)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ValueError(f"{directory} has no tokenizer.json")
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        config = _read_json(directory / "tokenizer_config.json")
        generation = _read_json(directory / "generation_config.json")
        special = {
            key: _token_content(config[key])
            for key in _SPECIAL_TOKEN_KEYS
            if config.get(key) is not None
        }
        add_bos = config.get("add_bos_token")
        return cls(
            backend,
            special_tokens=special,
            chat_template=_chat_template(directory, config),
            add_bos_token=bool(add_bos) if add_bos is not None else None,
            extra_eos_token_ids=_as_id_list(generation.get("eos_token_id")),
        )

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` (special-token strings in it become their ids)."""
        ids: list[int] = self._backend.encode(text, add_special_tokens=False).ids
        bos = self.bos_token_id
        if add_special_tokens and self.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self._backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def decode_token(self, token_id: int) -> str:
        """The text of one token, special tokens included (OpenAI logprobs `tokens`).

        A token holding only part of a multibyte character decodes to U+FFFD; its exact
        bytes are `token_bytes`.
        """
        return str(self._backend.decode([token_id], skip_special_tokens=False))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (OpenAI chat logprobs `bytes`)."""
        piece = self._backend.id_to_token(token_id)
        if piece is None:
            raise ValueError(f"token id {token_id} is out of range")
        if isinstance(self._backend.decoder, tokenizers.decoders.ByteLevel):
            table = _unicode_to_byte()
            if token_id not in self.special_token_ids and all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
        return self.decode_token(token_id).encode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        found = self._backend.token_to_id(token)
        return int(found) if found is not None else None

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Render chat `messages` into one prompt string, as Hugging Face would.

        Raises `ValueError` for malformed messages, a model without a chat template, or a
        template that rejects the conversation (its `raise_exception`).
        """
        if self._template is None:
            raise ValueError("messages: this model has no chat template")
        _check_messages(messages)
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise ValueError(f"messages: {exc}") from exc

    def _id_of(self, token: str | None) -> int | None:
        return self.token_to_id(token) if token is not None else None

    def _post_processor_adds_bos(self) -> bool:
        if self.bos_token_id is None:
            return False
        ids = self._backend.encode("", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self.bos_token_id


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{position}] must be an object with role and content")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise ValueError(f"messages[{position}].{key} must be a string")
        if not message["role"]:
            raise ValueError(f"messages[{position}].role must not be empty")


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja2's own tojson escapes HTML characters and forces ASCII; HF's does neither.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format_string: str) -> str:
    return datetime.now().strftime(format_string)


@lru_cache(maxsize=32)
def _compile_template(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"chat_template is not valid jinja: {exc}") from exc


def _chat_template(directory: Path, config: Mapping[str, Any]) -> str | None:
    """The default chat template: `chat_template.jinja` (newer checkpoints) or the config's."""
    template_file = directory / "chat_template.jinja"
    if template_file.is_file():
        return template_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {item.get("name"): item.get("template") for item in template}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _token_content(value: object) -> str:
    # tokenizer_config stores special tokens as strings or serialised AddedToken objects.
    if isinstance(value, Mapping):
        return str(value["content"])
    return str(value)


def _as_id_list(value: object) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(item) for item in value]
    raise ValueError(f"eos_token_id must be an integer or a list of integers, not {value!r}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table used by byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(byte): byte for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in printable:
            table[chr(256 + extra)] = byte
            extra += 1
    return table
