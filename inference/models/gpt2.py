"""GPT-2 over a flat packed batch with a paged KV cache.

Module names follow the Hugging Face checkpoint (without the `transformer.` prefix), so
loading is a rename-free copy except that GPT-2's `Conv1D` weights are stored `[in, out]`
and are transposed into `nn.Linear`'s `[out, in]`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from inference.models.attention import AttentionMetadata, KVCache, paged_attention
from inference.models.config import ModelConfig
from inference.models.layers import embedding

# Checkpoint weights stored by Conv1D ([in, out]); everything else is copied as is.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameters some old checkpoints carry (causal-mask buffers).
_IGNORED = (".attn.bias", ".attn.masked_bias")


class GPT2Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = config.num_heads, config.head_dim
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor, cache: KVCache, meta: AttentionMetadata) -> Tensor:
        q, k, v = self.c_attn(x).view(x.shape[0], 3, self.heads, self.head_dim).unbind(1)
        return self.c_proj(paged_attention(q, k, v, cache, meta))


class GPT2MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GPT2MLP(config)

    def forward(self, x: Tensor, cache: KVCache, meta: AttentionMetadata) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, meta)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = embedding(config.vocab_size, config.hidden_size)
        self.wpe = embedding(config.max_position_embeddings, config.hidden_size)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self, input_ids: Tensor, positions: Tensor, caches: list[KVCache], meta: AttentionMetadata
    ) -> Tensor:
        """Hidden states [T, d] before the final norm (applied only where logits are needed)."""
        x = self.wte(input_ids) + self.wpe(positions)
        for block, cache in zip(self.h, caches, strict=True):
            x = block(x, cache, meta)
        return x

    def compute_logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(self.ln_f(hidden))

    @staticmethod
    def state_from_hf(weights: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
        """Our state dict from checkpoint tensors (names without the `transformer.` prefix)."""
        state: dict[str, Tensor] = {}
        for name, tensor in weights.items():
            if name.endswith(_IGNORED):
                continue
            state[name] = tensor.t() if name.endswith(_CONV1D) else tensor
        if config.tie_word_embeddings or "lm_head.weight" not in state:
            state["lm_head.weight"] = state["wte.weight"]
        return state
