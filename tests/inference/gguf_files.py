"""Small GGUF files written with the `gguf` package's writer from a Hugging Face checkpoint.

`write_gguf` does what llama.cpp's `convert_hf_to_gguf.py` does for a Llama checkpoint:
llama.cpp's tensor names, q/k rows permuted for its RoPE, each tensor quantized to the type
asked for, the `llama.*` shape keys and the tokenizer as `tokenizer.ggml.*` metadata. It
returns what a faithful reader must find in the file: every tensor after the quantization
round trip, under Hugging Face's names and in Hugging Face's row order.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file
from safetensors.torch import save_file

Q = GGMLQuantizationType
# One of each supported type, on tensors whose rows fit the 32-wide blocks (down_proj's 688
# columns do not, so it is stored as a float type).
MIXED_TYPES = {
    "embed_tokens": Q.Q8_0,
    "q_proj": Q.Q4_0,
    "k_proj": Q.Q4_1,
    "v_proj": Q.BF16,
    "o_proj": Q.Q8_0,
    "gate_proj": Q.Q4_1,
    "up_proj": Q.Q4_0,
    "down_proj": Q.F16,
    "lm_head": Q.Q8_0,
}
NAMES = {
    "embed_tokens": "token_embd",
    "norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def llama_cpp_name(hf: str) -> str:
    short, _, kind = hf.removeprefix("model.").rpartition(".")
    if short.startswith("layers."):
        _, index, rest = short.split(".", 2)
        return f"blk.{index}.{NAMES[rest]}.{kind}"
    return f"{NAMES[short]}.{kind}"


def permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf's `LlamaModel.permute` (halves -> interleaved pairs per head)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    rows = weights.shape[0]
    return (
        weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def type_for(hf: str, types: dict[str, GGMLQuantizationType] | None) -> GGMLQuantizationType:
    if hf.endswith("norm.weight") or types is None:
        return Q.F32
    return next((t for part, t in types.items() if f"{part}.weight" in hf), Q.F32)


def write_gguf(
    source: Path,
    target: Path,
    *,
    types: dict[str, GGMLQuantizationType] | None = None,
    tied: bool = False,
    architecture: str = "llama",
    edit: Callable[[GGUFWriter], None] | None = None,
) -> dict[str, np.ndarray]:
    """Write `source` (a Llama or Qwen2 directory) as a GGUF; return the weights it now holds.

    Like llama.cpp, q/k rows are permuted for `llama` files only."""
    config = json.loads((source / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    permuted = architecture == "llama"
    tensors = load_file(str(source / "model.safetensors"))
    writer = GGUFWriter(target, architecture)
    _write_shape(writer, config)
    if (source / "tokenizer.json").exists():
        _write_tokenizer(writer, source)
    if edit is not None:
        edit(writer)
    held: dict[str, np.ndarray] = {}
    for hf, value in tensors.items():
        if tied and hf == "lm_head.weight":
            continue
        kind = type_for(hf, types)
        stored = value
        if permuted and ".q_proj." in hf:
            stored = permute(value, heads)
        elif permuted and ".k_proj." in hf:
            stored = permute(value, kv_heads)
        data = quantize(stored, kind) if kind != Q.F32 else stored
        writer.add_tensor(llama_cpp_name(hf), data, raw_dtype=kind)
        back = dequantize(data, kind).reshape(stored.shape).astype(np.float32)
        if permuted and ".q_proj." in hf:
            back = unpermute(back, heads)
        elif permuted and ".k_proj." in hf:
            back = unpermute(back, kv_heads)
        held[hf.removeprefix("model.")] = back
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def save_as_checkpoint(source: Path, held: dict[str, np.ndarray], target: Path) -> Path:
    """A Hugging Face directory holding `held` (the GGUF's weights) with `source`'s files."""
    target.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(source / name, target / name)
    config = json.loads((source / "config.json").read_text())
    config["tie_word_embeddings"] = "lm_head.weight" not in held
    (target / "config.json").write_text(json.dumps(config))
    tensors = {
        ("" if k == "lm_head.weight" else "model.") + k: torch.from_numpy(v.copy())
        for k, v in held.items()
    }
    save_file(tensors, str(target / "model.safetensors"))
    return target


def _write_shape(writer: GGUFWriter, config: dict) -> None:
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_rope_dimension_count(head_dim)
    # transformers 5 keeps rope settings in `rope_parameters`; 4.x and our tiny builder, top-level
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])


def _write_tokenizer(writer: GGUFWriter, source: Path) -> None:
    spec = json.loads((source / "tokenizer.json").read_text())
    settings = json.loads((source / "tokenizer_config.json").read_text())
    vocab: dict[str, int] = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {added["content"] for added in spec["added_tokens"] if added["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    kinds = [TokenType.CONTROL if token in special else TokenType.NORMAL for token in tokens]
    writer.add_token_types(kinds)
    writer.add_bos_token_id(vocab[settings["bos_token"]])
    writer.add_eos_token_id(vocab[settings["eos_token"]])
    writer.add_eot_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab[settings["pad_token"]])
    writer.add_add_bos_token(bool(settings["add_bos_token"]))
    writer.add_chat_template(settings["chat_template"])
