"""Fixtures of the real-model group (`-m real_model`): SmolLM2-135M-Instruct's GGUF, and
transformers' own loading of the same file (the reference). Built once per session, and only
by the tests that ask for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from inference.checkpoints.packaged import PACKAGED_MODELS

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = PACKAGED_MODELS["smollm2-135m-instruct"]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The fetched file (`make test-models` fetches it); skipped without it, failed in CI."""
    root = Path(os.environ.get("SLUICEGATE_REAL_MODEL_DIR") or REPO / "var" / "models")
    path = root / SMOLLM2.filename
    if not path.is_file() or path.stat().st_size != SMOLLM2.size:
        message = f"{path} is missing: `make test-models` (or `sluicegate models fetch`) gets it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)


@pytest.fixture(scope="session")
def hf_model(smollm2_path: Path) -> Any:
    """transformers' Llama on the same file, dequantized to float32 as ours is."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    )
    return model.eval()
