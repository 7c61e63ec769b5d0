"""Resolve a model name to a local checkpoint: a directory or a GGUF file."""

from __future__ import annotations

from pathlib import Path

from inference.checkpoints.gguf.file import is_gguf
from inference.checkpoints.packaged import (
    PACKAGED_MODELS,
    ModelNotFetched,
    is_fetched,
    packaged_path,
)
from inference.tiny.build import default_tiny_dir, ensure_tiny_model

TINY_MODELS = {"tiny": "gpt2", "tiny-gpt2": "gpt2", "tiny-llama": "llama"}
# Everything the engine reads from a checkpoint; weights in other formats are not fetched.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
]


def resolve_model_dir(name: str, *, tiny_root: Path | None = None) -> Path:
    """The checkpoint directory (or `.gguf` file) for `name`.

    - `tiny`, `tiny-gpt2`, `tiny-llama`: the built-in tiny model, built on first use under
      `<tiny_root>/tiny-<arch>` (root default: `$SLUICEGATE_MODEL_DIR` or `./var/models`).
    - A packaged model (`smollm2-135m-instruct`, see `packaged`): its file in the model root
      (`<tiny_root>`, default as above), once fetched (`ModelNotFetched` before that; serving
      never downloads it).
    - An existing local directory or `.gguf` file: itself.
    - Anything that looks like a local path (starts with `/`, `.` or `~`, or has more than one
      `/`, which no Hub repository id has) but does not exist: `ValueError`.
    - Otherwise a Hugging Face Hub repository id such as `Qwen/Qwen2.5-0.5B-Instruct`,
      downloaded with `huggingface_hub.snapshot_download(repo_id=name,
      allow_patterns=HUB_PATTERNS)` into the Hub cache (honours `HF_HOME`, `HF_TOKEN`,
      `HF_HUB_OFFLINE`); only config, safetensors and tokenizer files are fetched.
    """
    if name in TINY_MODELS:
        arch = TINY_MODELS[name]
        return ensure_tiny_model(default_tiny_dir(arch, tiny_root), arch)
    if name in PACKAGED_MODELS:
        if not is_fetched(name, tiny_root):
            raise ModelNotFetched(PACKAGED_MODELS[name], packaged_path(name, tiny_root))
        return packaged_path(name, tiny_root)
    path = Path(name).expanduser()
    if path.is_dir() or is_gguf(path):
        return path
    if path.suffix.lower() == ".gguf":
        raise ValueError(f"model file {name} does not exist")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or path.exists():
        raise ValueError(f"model directory {name} does not exist")
    return _download(name)


def _download(repo_id: str) -> Path:
    # Imported here: the Hub client is only needed for models that are not on disk.
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=repo_id, allow_patterns=HUB_PATTERNS))


def default_model_id(name: str) -> str:
    """The id a server gives `name` unless told otherwise: a GGUF file's stem, else `name`."""
    path = Path(name)
    return path.stem if path.suffix.lower() == ".gguf" else name
