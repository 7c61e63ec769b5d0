"""Load a checkpoint (a Hugging Face directory or a GGUF file) into one of our models.

A directory: `config.json` (+ `generation_config.json` for EOS ids), the weights from
`model.safetensors` or the shards listed in `model.safetensors.index.json`, and the tokenizer
from `tokenizer.json` when there is one. A `.gguf` file: all three from the file itself
(`inference.checkpoints.gguf`). Each model class maps checkpoint names onto its own
(`state_from_hf`); the model is built on the meta device so no time is spent initialising
weights that are overwritten at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from inference.checkpoints.gguf import config as gguf_config
from inference.checkpoints.gguf import tokenizer as gguf_tokenizer
from inference.checkpoints.gguf import weights as gguf_weights
from inference.checkpoints.gguf.file import GGUFFile, is_gguf
from inference.models.config import ModelConfig
from inference.models.gpt2 import GPT2
from inference.models.llama import Llama
from inference.text.tokenizer import Tokenizer

_PREFIXES = ("transformer.", "model.")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Checkpoint:
    model: GPT2 | Llama
    config: ModelConfig
    tokenizer: Tokenizer | None


def checkpoint_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    if single.exists():
        return [single]
    raise FileNotFoundError(f"{model_dir} has no model.safetensors or model.safetensors.index.json")


def read_weights(model_dir: Path) -> dict[str, Tensor]:
    """All checkpoint tensors, with the `transformer.`/`model.` prefix removed."""
    weights: dict[str, Tensor] = {}
    for path in checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                short = next((name[len(p) :] for p in _PREFIXES if name.startswith(p)), name)
                weights[short] = f.get_tensor(name)
    return weights


def load_checkpoint(path: Path, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Model (in `dtype`), config and tokenizer (None if a directory has none) of `path`."""
    if is_gguf(path):
        gguf = GGUFFile.open(path)
        config = gguf_config.config_from_gguf(gguf)
        model = build_model(gguf_weights.read_weights(gguf, config), config, dtype, path)
        tokenizer = (
            gguf_tokenizer.tokenizer_from_gguf(gguf) if gguf_tokenizer.has_tokenizer(gguf) else None
        )
        return Checkpoint(model, config, tokenizer)
    config = ModelConfig.from_dir(path)
    model = build_model(read_weights(path), config, dtype, path)
    has_tokenizer = (path / "tokenizer.json").exists()
    return Checkpoint(model, config, Tokenizer.from_dir(path) if has_tokenizer else None)


def load_model(path: Path, dtype: torch.dtype = torch.float32) -> tuple[GPT2 | Llama, ModelConfig]:
    checkpoint = load_checkpoint(path, dtype)
    return checkpoint.model, checkpoint.config


def load_config(path: Path) -> ModelConfig:
    """The config alone (no weights are read)."""
    if is_gguf(path):
        return gguf_config.config_from_gguf(GGUFFile.open(path))
    return ModelConfig.from_dir(path)


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer alone: `tokenizer.json` and friends, or a GGUF's metadata."""
    if is_gguf(path):
        return gguf_tokenizer.tokenizer_from_gguf(GGUFFile.open(path))
    return Tokenizer.from_dir(path)


def build_model(
    weights: dict[str, Tensor], config: ModelConfig, dtype: torch.dtype, source: Path
) -> GPT2 | Llama:
    """Our model for `config` holding `weights` (checkpoint names) in `dtype`."""
    model_cls: type[GPT2] | type[Llama] = GPT2 if config.arch == "gpt2" else Llama
    state = model_cls.state_from_hf(weights, config)
    converted: dict[int, Tensor] = {}  # by identity, so tied weights stay one tensor
    for name, tensor in state.items():
        if id(tensor) not in converted:
            converted[id(tensor)] = tensor.to(dtype).contiguous()
        state[name] = converted[id(tensor)]
    with torch.device("meta"):
        model = model_cls(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:  # missing/unexpected/mis-shaped weights
        raise ValueError(f"checkpoint {source} does not match its config: {error}") from error
    model.eval().requires_grad_(False)
    return model
