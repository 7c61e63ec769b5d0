"""The built-in tiny model: a deterministic Hugging Face checkpoint built in a few seconds.

`ensure_tiny_model()` writes `config.json`, `model.safetensors` (seeded random weights),
`tokenizer.json` (byte-level BPE trained on `corpus.txt`), `tokenizer_config.json`
(ChatML chat template), and `generation_config.json`. The same arguments give byte-identical
files on every machine: weights come from numpy's PCG64 generator in float32 (no BLAS, no
torch kernels), JSON is written with sorted keys.

    python -m inference.tiny.build DIR [--arch gpt2|llama]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ARCHES = ("gpt2", "llama")
CORPUS_PATH = Path(__file__).with_name("corpus.txt")
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
END_OF_TEXT, IM_START, IM_END, BEGIN_OF_TEXT = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
)
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, BEGIN_OF_TEXT]  # ids 0, 1, 2, 3

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class TinyShape:
    """The named table of shapes of the tiny checkpoints (both archs)."""

    vocab_size: int = 4096
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2  # llama only: grouped-query attention, 2 query heads per kv head
    intermediate: int = 688  # llama only (gpt2 uses 4 * hidden)
    context: int = 1024
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPE = TinyShape()


def default_tiny_dir(arch: str = "gpt2", root: Path | None = None) -> Path:
    """`<root>/tiny-<arch>`; the root defaults to `$SLUICEGATE_MODEL_DIR` or `./var/models`.

    The variable names a root rather than one checkpoint so `tiny` and `tiny-llama` can
    both live under it.
    """
    if root is None:
        root = Path(os.environ.get("SLUICEGATE_MODEL_DIR") or Path("var") / "models")
    return root / f"tiny-{arch}"


def ensure_tiny_model(directory: Path | None = None, arch: str = "gpt2") -> Path:
    """Build the tiny checkpoint into `directory` unless it is already there; return it.

    The files are built in a temporary sibling directory that is then renamed into place,
    so readers never see a half-written checkpoint and concurrent builders cannot collide
    (the loser of the rename discards its copy).
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    target = Path(directory) if directory is not None else default_tiny_dir(arch)
    if _is_complete(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} exists and is not a tiny model checkpoint")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_tiny_model(staging, arch)
        _make_readable(staging)
        try:
            os.replace(staging, target)  # atomic; replaces only a missing or empty target
        except OSError:
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_tiny_model(directory: Path, arch: str = "gpt2", shape: TinyShape = SHAPE) -> None:
    """Write all checkpoint files into an existing directory (no atomicity)."""
    tokenizer = train_tokenizer(arch, shape.vocab_size)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    rng = np.random.Generator(np.random.PCG64(shape.seed))
    tensors = (
        gpt2_weights(rng, shape, vocab_size)
        if arch == "gpt2"
        else llama_weights(rng, shape, vocab_size)
    )
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    _write_json(directory / "config.json", model_config(arch, shape, vocab_size))
    _write_json(directory / "tokenizer_config.json", tokenizer_config(arch, shape))
    _write_json(directory / "generation_config.json", generation_config(arch))


def train_tokenizer(arch: str, vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on the shipped corpus; Llama's also prepends its BOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus_lines(), trainer=trainer)
    if arch == "llama":
        bos_id = SPECIAL_TOKENS.index(BEGIN_OF_TEXT)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BEGIN_OF_TEXT} $A",
            pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B",
            special_tokens=[(BEGIN_OF_TEXT, bos_id)],
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def gpt2_weights(rng: np.random.Generator, shape: TinyShape, vocab: int) -> dict[str, Any]:
    """GPT-2 parameters under `transformers`' names (Conv1D weights are [in, out])."""
    d, inner = shape.hidden, 4 * shape.hidden
    tensors = {
        "transformer.wte.weight": _normal(rng, (vocab, d), 0.02),
        "transformer.wpe.weight": _normal(rng, (shape.context, d), 0.01),
        "transformer.ln_f.weight": _ones(d),
        "transformer.ln_f.bias": _zeros(d),
    }
    for i in range(shape.layers):
        p = f"transformer.h.{i}."
        tensors |= {
            p + "ln_1.weight": _ones(d),
            p + "ln_1.bias": _zeros(d),
            p + "attn.c_attn.weight": _normal(rng, (d, 3 * d), _LAYER_STD),
            p + "attn.c_attn.bias": _zeros(3 * d),
            p + "attn.c_proj.weight": _normal(rng, (d, d), _LAYER_STD),
            p + "attn.c_proj.bias": _zeros(d),
            p + "ln_2.weight": _ones(d),
            p + "ln_2.bias": _zeros(d),
            p + "mlp.c_fc.weight": _normal(rng, (d, inner), _LAYER_STD),
            p + "mlp.c_fc.bias": _zeros(inner),
            p + "mlp.c_proj.weight": _normal(rng, (inner, d), _LAYER_STD),
            p + "mlp.c_proj.bias": _zeros(d),
        }
    return tensors


def llama_weights(rng: np.random.Generator, shape: TinyShape, vocab: int) -> dict[str, Any]:
    """Llama parameters under `transformers`' names (Linear weights are [out, in])."""
    d, hd = shape.hidden, shape.head_dim
    q_out, kv_out = shape.heads * hd, shape.kv_heads * hd
    tensors = {
        "model.embed_tokens.weight": _normal(rng, (vocab, d), 0.02),
        "model.norm.weight": _ones(d),
        "lm_head.weight": _normal(rng, (vocab, d), 0.02),
    }
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": _ones(d),
            p + "self_attn.q_proj.weight": _normal(rng, (q_out, d), _LAYER_STD),
            p + "self_attn.k_proj.weight": _normal(rng, (kv_out, d), _LAYER_STD),
            p + "self_attn.v_proj.weight": _normal(rng, (kv_out, d), _LAYER_STD),
            p + "self_attn.o_proj.weight": _normal(rng, (d, q_out), _LAYER_STD),
            p + "post_attention_layernorm.weight": _ones(d),
            p + "mlp.gate_proj.weight": _normal(rng, (shape.intermediate, d), _LAYER_STD),
            p + "mlp.up_proj.weight": _normal(rng, (shape.intermediate, d), _LAYER_STD),
            p + "mlp.down_proj.weight": _normal(rng, (d, shape.intermediate), _LAYER_STD),
        }
    return tensors


def model_config(arch: str, shape: TinyShape, vocab_size: int) -> dict[str, Any]:
    eos = SPECIAL_TOKENS.index(END_OF_TEXT)
    if arch == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": vocab_size,
            "n_positions": shape.context,
            "n_embd": shape.hidden,
            "n_layer": shape.layers,
            "n_head": shape.heads,
            "n_inner": None,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": eos,
            "eos_token_id": eos,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": SPECIAL_TOKENS.index(BEGIN_OF_TEXT),
        "eos_token_id": eos,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }


def tokenizer_config(arch: str, shape: TinyShape = SHAPE) -> dict[str, Any]:
    llama = arch == "llama"
    # Llama checkpoints start every sequence with BOS, their chat templates included.
    template = ("{{ bos_token }}" if llama else "") + CHATML_TEMPLATE
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BEGIN_OF_TEXT if llama else END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "add_bos_token": llama,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": shape.context,
        "chat_template": template,
    }


def generation_config(arch: str) -> dict[str, Any]:
    # <|im_end|> ends a chat turn, so it stops generation as well as <|endoftext|>.
    eos_ids = [SPECIAL_TOKENS.index(END_OF_TEXT), SPECIAL_TOKENS.index(IM_END)]
    bos = BEGIN_OF_TEXT if arch == "llama" else END_OF_TEXT
    return {
        "bos_token_id": SPECIAL_TOKENS.index(bos),
        "eos_token_id": eos_ids,
        "pad_token_id": SPECIAL_TOKENS.index(END_OF_TEXT),
        "do_sample": False,
    }


# Layer matrices are wider than GPT-2's 0.02 so that each block's output outweighs the token
# embedding in the residual stream; otherwise tied embeddings make the model repeat its input.
_LAYER_STD = 0.08


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> Any:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _ones(size: int) -> Any:
    return np.ones(size, dtype=np.float32)


def _zeros(size: int) -> Any:
    return np.zeros(size, dtype=np.float32)


def _corpus_lines() -> Iterator[str]:
    with CORPUS_PATH.open(encoding="utf-8") as handle:
        yield from handle


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in MODEL_FILES)


def _make_readable(directory: Path) -> None:
    # mkdtemp creates the directory private to its owner; a checkpoint is for everyone to read.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the built-in tiny model checkpoint.")
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        help="default: $SLUICEGATE_MODEL_DIR/tiny-ARCH or var/models/tiny-ARCH",
    )
    parser.add_argument("--arch", choices=ARCHES, default="gpt2")
    args = parser.parse_args(argv)
    print(ensure_tiny_model(args.directory, args.arch))


if __name__ == "__main__":
    main()
