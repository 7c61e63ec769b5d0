"""Seeded random Hugging Face checkpoints for correctness tests (transformers is test-only).

`initializer_range` is raised well above the usual 0.02 so the random models' next-token
distributions are peaked: a greedy comparison then tests our arithmetic, not which of two
near-equal logits float rounding happens to favour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 384
EOS = 7


def _llama_shape() -> dict[str, Any]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention
        "max_position_embeddings": 512,
        "initializer_range": 0.3,
        "eos_token_id": EOS,
        "bos_token_id": None,
    }


def build_model(kind: str, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    model: PreTrainedModel
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=512,
            initializer_range=0.3,
            eos_token_id=EOS,
            bos_token_id=EOS,
        )
        model = GPT2LMHeadModel(config)
    elif kind == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                **_llama_shape(), rope_parameters={"rope_type": "default", "rope_theta": 5000.0}
            )
        )
    elif kind == "llama-tied":
        model = LlamaForCausalLM(LlamaConfig(**_llama_shape(), tie_word_embeddings=True))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**_llama_shape()))
        with torch.no_grad():  # fresh biases are zero: make them matter
            for layer in model.model.layers:
                for proj in (
                    layer.self_attn.q_proj,
                    layer.self_attn.k_proj,
                    layer.self_attn.v_proj,
                ):
                    proj.bias.normal_(0.0, 0.3)
    else:
        raise ValueError(kind)
    return model.eval()


def save_checkpoint(model: PreTrainedModel, directory: Path, *, shard: bool = False) -> Path:
    kwargs: dict[str, Any] = {"max_shard_size": "100KB"} if shard else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    return directory


def reference_generate(model: PreTrainedModel, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy continuation, never stopping at EOS."""
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=0
    )
    model.generation_config.eos_token_id = None  # else it overrides the config passed here
    ids = torch.tensor([prompt])
    with torch.no_grad():  # an explicit mask: token 0 (the pad id) may occur in prompts
        out = model.generate(  # type: ignore[operator]
            ids, attention_mask=torch.ones_like(ids), generation_config=config
        )
    return list(out[0, len(prompt) :].tolist())


def random_prompts(count: int, low: int, high: int, seed: int) -> list[list[int]]:
    rng = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (count,), generator=rng).tolist()
    return [torch.randint(0, VOCAB, (n,), generator=rng).tolist() for n in lengths]
