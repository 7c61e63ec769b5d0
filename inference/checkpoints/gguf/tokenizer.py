"""Our `Tokenizer` from a GGUF's `tokenizer.ggml.*` metadata and `tokenizer.chat_template`.

Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`, what Llama 3, Qwen2 and SmolLM files
carry) is built. The vocabulary and merges are the file's; the text is split before BPE as the
merges were learned (`tokenizer.ggml.pre` picks the split, as in llama.cpp; GPT-2's split when
the name is not known). Tokens the file marks CONTROL become special tokens and USER_DEFINED
ones plain added tokens, both matched whole in the text (as llama.cpp and Hugging Face do).
The chat template is rendered by `Tokenizer.apply_chat_template`, as for any checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from inference.checkpoints.gguf.file import GGUFFile, MalformedGGUF
from inference.text.tokenizer import Tokenizer

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split regex (llama.cpp's names); others: GPT-2's own regex.
PRE_TOKENIZER_SPLITS = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Digits one by one, then GPT-2's split (SmolLM, StarCoder).
_SINGLE_DIGIT_PRE = ("smollm", "starcoder", "refact")
_SPECIAL_KEYS = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}
# Further end-of-generation tokens (end of turn, end of message) stop generation too.
_EXTRA_EOS_KEYS = ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def has_tokenizer(gguf: GGUFFile) -> bool:
    return "tokenizer.ggml.model" in gguf.metadata


def tokenizer_from_gguf(gguf: GGUFFile) -> Tokenizer:
    meta = gguf.metadata
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise MalformedGGUF(f"{gguf.path.name} has no tokenizer (tokenizer.ggml.model)")
    if kind != "gpt2":
        raise MalformedGGUF(
            f"{gguf.path.name}: tokenizer {kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens = gguf.array("tokenizer.ggml.tokens")
    merges = gguf.array("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise MalformedGGUF(f"{gguf.path.name} has no tokenizer.ggml.tokens or merges")
    types = gguf.array("tokenizer.ggml.token_type") or []
    backend = _byte_level_bpe(tokens, merges, meta.get("tokenizer.ggml.pre"))
    _add_marked_tokens(backend, tokens, types)
    special = {
        name: tokens[int(meta[f"tokenizer.ggml.{key}"])]
        for name, key in _SPECIAL_KEYS.items()
        if meta.get(f"tokenizer.ggml.{key}") is not None
    }
    template = meta.get("tokenizer.chat_template")
    return Tokenizer(
        backend,
        special_tokens=special,
        chat_template=template if isinstance(template, str) else None,
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        extra_eos_token_ids=[int(meta[key]) for key in _EXTRA_EOS_KEYS if key in meta],
    )


def _byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], pre: Any) -> Backend:
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [_merge_pair(merge) for merge in merges]
    backend = Backend(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    backend.pre_tokenizer = _pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    return backend


def _merge_pair(merge: str) -> tuple[str, str]:
    left, sep, right = merge.partition(" ")
    if not sep:
        raise MalformedGGUF(f"merge {merge!r} is not two tokens separated by a space")
    return left, right


def _pre_tokenizer(pre: Any) -> pre_tokenizers.PreTokenizer:
    split = PRE_TOKENIZER_SPLITS.get(pre) if isinstance(pre, str) else None
    if split is not None:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _SINGLE_DIGIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


def _add_marked_tokens(backend: Backend, tokens: Sequence[str], types: Sequence[int]) -> None:
    marked = list(zip(tokens, types, strict=False))
    control = [t for t, kind in marked if kind == CONTROL]
    user = [t for t, kind in marked if kind == USER_DEFINED]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
