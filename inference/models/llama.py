"""The Llama family (Llama, Mistral, Qwen2) over a flat packed batch with a paged KV cache.

RoPE (rotate-half layout, `rope_theta`), RMSNorm, SwiGLU, grouped-query attention, optional
q/k/v biases (Qwen2) and tied or untied embeddings. The checkpoint's separate q/k/v and
gate/up projections are fused at load time into one matmul each, which is what matters for
speed on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inference.models.attention import AttentionMetadata, KVCache, paged_attention
from inference.models.config import ModelConfig
from inference.models.layers import embedding


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 and cast back before scaling, exactly as the reference does.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin of shape [T, 1, head_dim] for the rotate-half RoPE layout."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, q + 2 * kv, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q, config.hidden_size, bias=config.o_bias)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache, meta: AttentionMetadata
    ) -> Tensor:
        t = x.shape[0]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split((q_size, kv_size, kv_size), dim=-1)
        q = apply_rotary(q.view(t, self.heads, self.head_dim), *rope)
        k = apply_rotary(k.view(t, self.kv_heads, self.head_dim), *rope)
        v = v.view(t, self.kv_heads, self.head_dim)
        return self.o_proj(paged_attention(q, k, v, cache, meta))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_up_proj = nn.Linear(d, 2 * f, bias=config.mlp_bias)
        self.down_proj = nn.Linear(f, d, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache, meta: AttentionMetadata
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self, input_ids: Tensor, positions: Tensor, caches: list[KVCache], meta: AttentionMetadata
    ) -> Tensor:
        """Hidden states [T, d] before the final norm (applied only where logits are needed)."""
        x = self.embed_tokens(input_ids)
        c = self.config
        rope = rotary_cos_sin(positions, c.head_dim, c.rope_theta, x.dtype)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, rope, cache, meta)
        return x

    def compute_logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(self.norm(hidden))

    @staticmethod
    def state_from_hf(weights: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
        """Our state dict from checkpoint tensors (names without the `model.` prefix)."""
        state = dict(weights)
        for i in range(config.num_layers):
            attn, mlp = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
            _fuse(state, [attn + p for p in ("q_proj", "k_proj", "v_proj")], attn + "qkv_proj")
            _fuse(state, [mlp + "gate_proj", mlp + "up_proj"], mlp + "gate_up_proj")
        if config.tie_word_embeddings or "lm_head.weight" not in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
        state.pop("rotary_emb.inv_freq", None)
        for i in range(config.num_layers):
            state.pop(f"layers.{i}.self_attn.rotary_emb.inv_freq", None)
        return state


def _fuse(state: dict[str, Tensor], parts: list[str], fused: str) -> None:
    for suffix in (".weight", ".bias"):
        names = [p + suffix for p in parts]
        if all(n in state for n in names):
            state[fused + suffix] = torch.cat([state.pop(n) for n in names], dim=0)
