"""Load a Hugging Face checkpoint directory into one of our models.

Reads `config.json` (+ `generation_config.json` for EOS ids) and the weights from
`model.safetensors` or the shards listed in `model.safetensors.index.json`. Each model class
maps checkpoint names onto its own (`state_from_hf`); the model is built on the meta device so
no time is spent initialising weights that are overwritten at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from inference.models.config import ModelConfig
from inference.models.gpt2 import GPT2
from inference.models.llama import Llama

_PREFIXES = ("transformer.", "model.")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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


def load_model(
    model_dir: Path, dtype: torch.dtype = torch.float32
) -> tuple[GPT2 | Llama, ModelConfig]:
    config = ModelConfig.from_dir(model_dir)
    model_cls: type[GPT2] | type[Llama] = GPT2 if config.arch == "gpt2" else Llama
    state = model_cls.state_from_hf(read_weights(model_dir), config)
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
        raise ValueError(f"checkpoint in {model_dir} does not match its config: {error}") from error
    model.eval().requires_grad_(False)
    return model, config
