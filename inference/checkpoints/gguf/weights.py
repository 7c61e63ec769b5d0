"""A GGUF's tensors as float tensors under Hugging Face's names.

Every tensor is dequantized at load with `gguf.quants.dequantize` (F32, F16, BF16, Q8_0, Q4_0,
Q4_1 and the other block types it knows) to float32, then cast to the engine's dtype by the
loader. llama.cpp's converter permutes the rows of `q_proj`/`k_proj` of `llama` models so that
its RoPE can rotate adjacent pairs; our `Llama` (like Hugging Face's) rotates halves, so the
permutation is undone here and both compute the same function.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from gguf import GGMLQuantizationType, ReaderTensor
from gguf.quants import dequantize
from torch import Tensor

from inference.checkpoints.gguf.file import GGUFFile, MalformedGGUF
from inference.models.config import ModelConfig

_GLOBAL_NAMES = {
    "token_embd": "embed_tokens",
    "output_norm": "norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `layers.3.self_attn.q_proj.weight` (no `model.` prefix)."""
    layer = _LAYER_TENSOR.fullmatch(gguf_name)
    if layer is not None:
        index, part, kind = layer.groups()
        if part in _LAYER_NAMES:
            return f"layers.{index}.{_LAYER_NAMES[part]}.{kind}"
    else:
        stem, _, kind = gguf_name.rpartition(".")
        if stem in _GLOBAL_NAMES and kind in ("weight", "bias"):
            return f"{_GLOBAL_NAMES[stem]}.{kind}"
    raise MalformedGGUF(f"tensor {gguf_name!r} has no counterpart in our Llama model")


def dequantized(tensor: ReaderTensor) -> np.ndarray:
    """The tensor as float32 in numpy's order (rows first), whatever its GGML type."""
    kind = GGMLQuantizationType(tensor.tensor_type)
    try:
        values = dequantize(tensor.data, kind)
    except NotImplementedError as exc:
        raise MalformedGGUF(f"tensor {tensor.name}: {kind.name} cannot be dequantized") from exc
    shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists the fastest axis first
    values = np.asarray(values, dtype=np.float32).reshape(shape)
    # F32 tensors come back as read-only views of the memory-mapped file: own a copy.
    return values if values.flags.writeable else values.copy()


def unpermute_rope_rows(weight: Tensor, heads: int) -> Tensor:
    """Undo convert_hf_to_gguf's `permute` of q/k rows (each head: pairs -> halves)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def read_weights(gguf: GGUFFile, config: ModelConfig) -> dict[str, Tensor]:
    """Float32 tensors by Hugging Face name, q/k rows in Hugging Face's order."""
    weights: dict[str, Tensor] = {}
    for tensor in gguf.reader.tensors:
        name = hf_name(tensor.name)
        value = torch.from_numpy(dequantized(tensor))
        if gguf.rope_permuted and ".q_proj." in name:
            value = unpermute_rope_rows(value, config.num_heads)
        elif gguf.rope_permuted and ".k_proj." in name:
            value = unpermute_rope_rows(value, config.num_kv_heads)
        weights[name] = value
    return weights
