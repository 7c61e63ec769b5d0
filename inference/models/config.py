"""A model's shape, read from a Hugging Face `config.json` (GPT-2 and Llama-family keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

Arch = Literal["gpt2", "llama"]

# model_type in config.json -> our architecture. Qwen2 is Llama with q/k/v biases.
_MODEL_TYPES: dict[str, Arch] = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
}


@dataclass(frozen=True)
class ModelConfig:
    arch: Arch
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm_eps: float
    tie_word_embeddings: bool
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings once when tied); used for FLOP and byte ceilings."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * (q + 2 * kv) + q * d
        mlp = (2 if self.arch == "gpt2" else 3) * d * f
        per_layer = attn + mlp + 4 * d
        embed = v * d + (self.max_position_embeddings * d if self.arch == "gpt2" else 0)
        head = 0 if self.tie_word_embeddings else v * d
        return self.num_layers * per_layer + embed + head + 2 * d

    def flops_per_token(self, context: int = 0, *, with_head: bool = True) -> int:
        """Forward FLOPs for one token: 2 per weight of every matmul, plus attention."""
        d, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        mlp = (2 if self.arch == "gpt2" else 3) * d * f
        matmul = self.num_layers * (d * (q + 2 * kv) + q * d + mlp)
        attention = self.num_layers * 2 * 2 * q * context  # QK^T and PV
        head = self.vocab_size * d if with_head else 0
        return 2 * (matmul + head) + attention

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelConfig:
        config = json.loads((model_dir / "config.json").read_text())
        generation = model_dir / "generation_config.json"
        if generation.exists():
            gen = json.loads(generation.read_text())
            if gen.get("eos_token_id") is not None:
                config = {**config, "eos_token_id": gen["eos_token_id"]}
        return cls.from_hf(config)

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelConfig:
        model_type = config.get("model_type", "")
        arch = _MODEL_TYPES.get(model_type)
        if arch is None:
            supported = ", ".join(sorted(_MODEL_TYPES))
            raise ValueError(f"model_type {model_type!r} is not supported (only {supported})")
        eos = config.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        common = {"bos_token_id": config.get("bos_token_id"), "eos_token_ids": eos_ids}
        if arch == "gpt2":
            return _gpt2(config, common)
        return _llama(config, model_type, common)


def _gpt2(c: dict[str, Any], common: dict[str, Any]) -> ModelConfig:
    if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn"):
        raise ValueError("GPT-2 attention variants (scale_attn_by_inverse_layer_idx) unsupported")
    if c.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function {c['activation_function']!r} is not supported")
    d, heads = c["n_embd"], c["n_head"]
    return ModelConfig(
        arch="gpt2",
        vocab_size=c["vocab_size"],
        hidden_size=d,
        num_layers=c["n_layer"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=d // heads,
        intermediate_size=c.get("n_inner") or 4 * d,
        max_position_embeddings=c["n_positions"],
        norm_eps=c.get("layer_norm_epsilon", 1e-5),
        tie_word_embeddings=c.get("tie_word_embeddings", True),
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        **common,
    )


def _rope_theta(c: dict[str, Any]) -> float:
    # transformers 5 moved rope settings into `rope_parameters`; 4.x kept them top-level.
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not supported (only default RoPE)")
    return float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))


def _llama(c: dict[str, Any], model_type: str, common: dict[str, Any]) -> ModelConfig:
    if c.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {c['hidden_act']!r} is not supported")
    if c.get("use_sliding_window") or "sliding_attention" in c.get("layer_types", []):
        raise ValueError("sliding-window attention is not supported")
    heads = c["num_attention_heads"]
    qwen2 = model_type == "qwen2"
    max_positions = c.get("max_position_embeddings", 2048)
    if model_type == "mistral" and c.get("sliding_window"):
        # Full attention equals sliding-window attention while the context fits the window.
        max_positions = min(max_positions, c["sliding_window"])
    attention_bias = bool(c.get("attention_bias", False))
    return ModelConfig(
        arch="llama",
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or c["hidden_size"] // heads,
        intermediate_size=c["intermediate_size"],
        max_position_embeddings=max_positions,
        norm_eps=c.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=c.get("tie_word_embeddings", False),
        rope_theta=_rope_theta(c),
        qkv_bias=qwen2 or attention_bias,  # Qwen2 always has q/k/v biases
        o_bias=attention_bias and not qwen2,
        mlp_bias=bool(c.get("mlp_bias", False)),
        **common,
    )


# Named shapes (gpt-fast style) for benchmarks and tests that build checkpoints from scratch.
SHAPES: dict[str, ModelConfig] = {
    "gpt2-small": ModelConfig(
        arch="gpt2",
        vocab_size=50257,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        num_kv_heads=12,
        head_dim=64,
        intermediate_size=3072,
        max_position_embeddings=1024,
        norm_eps=1e-5,
        tie_word_embeddings=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
    ),
    "llama-tiny-gqa": ModelConfig(
        arch="llama",
        vocab_size=512,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=512,
        norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
}
SHAPES["gpt2-medium"] = replace(
    SHAPES["gpt2-small"], hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=16,
    intermediate_size=4096,
)  # fmt: skip
