"""A GGUF file's metadata, and the architectures we can run from one.

The `gguf` package's `GGUFReader` memory-maps the file; `GGUFFile` keeps it for the tensors
and turns the metadata fields into plain Python values once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFReader, ReaderTensor

# general.architecture -> whether convert_hf_to_gguf permuted q/k rows for llama.cpp's RoPE
# (it does for `llama`, which also covers Mistral; Qwen2 files keep Hugging Face's order).
SUPPORTED_ARCHITECTURES: dict[str, bool] = {"llama": True, "qwen2": False}
# Arrays that are large and read only where needed (the tokenizer reads them itself).
_LAZY_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")


class UnsupportedArchitecture(ValueError):
    """The file holds a model family the engine does not implement."""

    def __init__(self, architecture: str, path: Path):
        self.architecture = architecture
        supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
        super().__init__(
            f"{path.name}: GGUF architecture {architecture!r} is not supported "
            f"(supported: {supported})"
        )


class MalformedGGUF(ValueError):
    """The file is not a GGUF we can read, or lacks a key the model needs."""


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


@dataclass
class GGUFFile:
    path: Path
    reader: GGUFReader
    metadata: dict[str, Any]
    architecture: str

    @classmethod
    def open(cls, path: Path) -> GGUFFile:
        """Open `path`; `UnsupportedArchitecture` unless it is a family we run."""
        try:
            reader = GGUFReader(path)
        except (ValueError, OSError) as exc:  # bad magic, truncated file, unknown version
            raise MalformedGGUF(f"{path.name} is not a readable GGUF file: {exc}") from exc
        metadata = {
            name: field.contents()
            for name, field in reader.fields.items()
            if name not in _LAZY_ARRAYS
        }
        architecture = metadata.get("general.architecture")
        if not isinstance(architecture, str):
            raise MalformedGGUF(f"{path.name} has no general.architecture")
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitecture(architecture, path)
        return cls(path=path, reader=reader, metadata=metadata, architecture=architecture)

    @property
    def rope_permuted(self) -> bool:
        return SUPPORTED_ARCHITECTURES[self.architecture]

    def array(self, key: str) -> list[Any] | None:
        """A (possibly large) array field, or None when the file has no `key`."""
        field = self.reader.fields.get(key)
        return None if field is None else list(field.contents())

    def arch_key(self, name: str, default: Any = None) -> Any:
        """`<architecture>.<name>` from the metadata, e.g. `llama.block_count`."""
        return self.metadata.get(f"{self.architecture}.{name}", default)

    def required(self, name: str) -> Any:
        value = self.arch_key(name)
        if value is None:
            raise MalformedGGUF(f"{self.path.name} has no {self.architecture}.{name}")
        return value

    def tensors(self) -> dict[str, ReaderTensor]:
        return {tensor.name: tensor for tensor in self.reader.tensors}
