"""Reading model shapes from config.json, and loading checkpoints that do not fit them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference.checkpoints.loader import load_model
from inference.models.config import SHAPES, ModelConfig

LLAMA = {
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "eos_token_id": [1, 2],
}


def test_gpt2_keys() -> None:
    config = ModelConfig.from_hf(
        {"model_type": "gpt2", "vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 4,
         "n_positions": 64, "eos_token_id": 0}
    )  # fmt: skip
    assert (config.arch, config.head_dim, config.intermediate_size) == ("gpt2", 8, 128)
    assert config.tie_word_embeddings and config.qkv_bias and config.eos_token_ids == (0,)


def test_llama_keys_old_and_new_rope_layouts() -> None:
    legacy = ModelConfig.from_hf({**LLAMA, "rope_theta": 500000.0})
    current = ModelConfig.from_hf(
        {**LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    )
    assert legacy == current
    assert legacy.rope_theta == 500000.0 and legacy.num_kv_heads == 2 and legacy.head_dim == 8
    assert legacy.eos_token_ids == (1, 2) and not legacy.qkv_bias and not legacy.tie_word_embeddings


def test_qwen2_has_qkv_bias_and_mistral_window_caps_the_context() -> None:
    qwen = ModelConfig.from_hf({**LLAMA, "model_type": "qwen2"})
    assert qwen.qkv_bias and not qwen.o_bias
    mistral = ModelConfig.from_hf({**LLAMA, "model_type": "mistral", "sliding_window": 64})
    assert mistral.max_position_embeddings == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "bert"}, "model_type"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "sliding"),
    ],
)
def test_unsupported_configs_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf({**LLAMA, **change})


def test_shape_table_counts_gpt2_small() -> None:
    assert round(SHAPES["gpt2-small"].num_params / 1e6) == 124


def test_checkpoint_missing_a_weight_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    save_file({"model.embed_tokens.weight": torch.zeros(100, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(tmp_path)
