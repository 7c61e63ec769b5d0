"""`ModelConfig` from a GGUF's `<arch>.*` metadata (the keys llama.cpp's converter writes)."""

from __future__ import annotations

from typing import Any

from inference.checkpoints.gguf.file import GGUFFile, MalformedGGUF
from inference.models.config import ModelConfig

DEFAULT_ROPE_THETA = 10000.0
DEFAULT_RMS_EPS = 1e-5


def config_from_gguf(gguf: GGUFFile) -> ModelConfig:
    """The model's shape; tied embeddings when the file has no `output.weight`."""
    tensors = gguf.tensors()
    embedding = tensors.get("token_embd.weight")
    if embedding is None:
        raise MalformedGGUF(f"{gguf.path.name} has no token_embd.weight")
    hidden = _int(gguf, "embedding_length")
    heads = _int(gguf, "attention.head_count")
    head_dim = int(gguf.arch_key("attention.key_length") or hidden // heads)
    _check_rope(gguf, head_dim)
    eos = gguf.metadata.get("tokenizer.ggml.eos_token_id")
    bos = gguf.metadata.get("tokenizer.ggml.bos_token_id")
    return ModelConfig(
        arch="llama",
        vocab_size=int(embedding.shape[1]),  # ggml order: [hidden, vocab]
        hidden_size=hidden,
        num_layers=_int(gguf, "block_count"),
        num_heads=heads,
        num_kv_heads=int(gguf.arch_key("attention.head_count_kv") or heads),
        head_dim=head_dim,
        intermediate_size=_int(gguf, "feed_forward_length"),
        max_position_embeddings=_int(gguf, "context_length"),
        norm_eps=float(gguf.arch_key("attention.layer_norm_rms_epsilon", DEFAULT_RMS_EPS)),
        tie_word_embeddings="output.weight" not in tensors,
        rope_theta=float(gguf.arch_key("rope.freq_base", DEFAULT_ROPE_THETA)),
        qkv_bias="blk.0.attn_q.bias" in tensors,
        o_bias="blk.0.attn_output.bias" in tensors,
        mlp_bias="blk.0.ffn_up.bias" in tensors,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=() if eos is None else (int(eos),),
    )


def _int(gguf: GGUFFile, name: str) -> int:
    value: Any = gguf.required(name)
    if not isinstance(value, int):  # per-layer arrays (some newer families) are not ours
        raise MalformedGGUF(f"{gguf.path.name}: {gguf.architecture}.{name} must be one integer")
    return value


def _check_rope(gguf: GGUFFile, head_dim: int) -> None:
    scaling = gguf.arch_key("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise MalformedGGUF(f"{gguf.path.name}: RoPE scaling {scaling!r} is not supported")
    if "rope_freqs.weight" in gguf.tensors():
        raise MalformedGGUF(f"{gguf.path.name}: RoPE frequency factors are not supported")
    rotary = gguf.arch_key("rope.dimension_count", head_dim)
    if rotary != head_dim:
        raise MalformedGGUF(
            f"{gguf.path.name}: RoPE over {rotary} of {head_dim} head dimensions is not supported"
        )
