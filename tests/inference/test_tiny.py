"""The built-in tiny checkpoints: deterministic bytes, loadable by transformers, sane outputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from inference.checkpoints.hub import resolve_model_dir
from inference.text.tokenizer import Tokenizer
from inference.tiny.build import (
    CORPUS_PATH,
    MODEL_FILES,
    default_tiny_dir,
    ensure_tiny_model,
)

ROOT = Path(__file__).resolve().parents[2]


# Digest of all checkpoint files. A change means the tiny model is no longer the same bytes
# on every machine (or numpy/tokenizers changed their output): investigate before updating.
GOLDEN = {
    "gpt2": "a35d7192558221ea263af2336e95b9b99147f72119d6a2d2852eba46fb6d0201",
    "llama": "e9204418d07f987548b76d96c2643afd141e1be696dbedf3291d6feb9931305c",
}


def checkpoint_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(name.encode())
        digest.update(hashlib.sha256((directory / name).read_bytes()).digest())
    return digest.hexdigest()


def test_golden_digests(tiny_model_dir: Path, tiny_llama_dir: Path) -> None:
    assert checkpoint_digest(tiny_model_dir) == GOLDEN["gpt2"]
    assert checkpoint_digest(tiny_llama_dir) == GOLDEN["llama"]


def digests(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in MODEL_FILES
    }


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_builds_are_byte_identical_across_processes(
    arch: str, tmp_path: Path, tiny_model_dir: Path, tiny_llama_dir: Path
) -> None:
    # A second build in a fresh interpreter (its own hash seeds, its own thread pool).
    other = tmp_path / "other"
    command = [sys.executable, "-m", "inference.tiny.build", str(other), "--arch", arch]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(other)
    session_build = tiny_model_dir if arch == "gpt2" else tiny_llama_dir
    assert digests(other) == digests(session_build)


def test_concurrent_builders_agree(tmp_path: Path, tiny_model_dir: Path) -> None:
    target = tmp_path / "race"
    command = [sys.executable, "-m", "inference.tiny.build", str(target)]
    builders = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE) for _ in range(2)]
    assert [builder.wait(timeout=60) for builder in builders] == [0, 0]
    assert digests(target) == digests(tiny_model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["race"]  # no staging directory left


def test_ensure_is_idempotent(tiny_model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert ensure_tiny_model(tiny_model_dir) == tiny_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()} == before


def test_refuses_foreign_directory_and_unknown_arch(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a tiny model"):
        ensure_tiny_model(tmp_path)
    with pytest.raises(ValueError, match="arch must be one of"):
        ensure_tiny_model(tmp_path / "x", arch="mamba")


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLUICEGATE_MODEL_DIR", raising=False)
    assert default_tiny_dir("llama") == Path("var/models/tiny-llama")
    monkeypatch.setenv("SLUICEGATE_MODEL_DIR", str(tmp_path))
    assert default_tiny_dir("gpt2") == tmp_path / "tiny-gpt2"


def test_gpt2_checkpoint_layout(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_positions"] == 1024
    with safe_open(str(tiny_model_dir / "model.safetensors"), "np") as handle:
        assert handle.metadata() == {"format": "pt"}
        shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}  # noqa: SIM118
    assert shapes["transformer.wte.weight"] == [config["vocab_size"], config["n_embd"]]
    assert shapes["transformer.h.0.attn.c_attn.weight"] == [config["n_embd"], 3 * config["n_embd"]]
    params = sum(_product(shape) for shape in shapes.values())
    assert 2_000_000 < params < 8_000_000


def test_llama_checkpoint_uses_grouped_query_attention(tiny_llama_dir: Path) -> None:
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["tie_word_embeddings"] is False
    with safe_open(str(tiny_llama_dir / "model.safetensors"), "np") as handle:
        k_shape = handle.get_slice("model.layers.0.self_attn.k_proj.weight").get_shape()
        assert "lm_head.weight" in handle.keys()  # noqa: SIM118
    assert k_shape == [config["num_key_value_heads"] * config["head_dim"], config["hidden_size"]]


def test_corpus_exercises_multibyte_text() -> None:
    corpus = CORPUS_PATH.read_text(encoding="utf-8")
    assert len(corpus.encode("utf-8")) > 200_000
    assert any(0x4E00 <= ord(ch) <= 0x9FFF for ch in corpus)  # CJK
    assert any(ord(ch) > 0xFFFF for ch in corpus)  # emoji (4-byte UTF-8)
    assert "é" in corpus and "ñ" in corpus


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_transformers_loads_and_generates_varied_text(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    directory = request.getfixturevalue(fixture)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokenizer = Tokenizer.from_dir(directory)
    prompt = torch.tensor([tokenizer.encode("The engine streams the next token")])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0)
    generated = out[0, prompt.shape[1] :].tolist()
    assert len(generated) == 16
    assert len(set(generated)) >= 5  # not stuck repeating one token


def test_resolve_model_dir(tmp_path: Path, tiny_model_dir: Path) -> None:
    built = resolve_model_dir("tiny-llama", tiny_root=tmp_path)
    assert built == tmp_path / "tiny-llama"
    assert json.loads((built / "config.json").read_text())["model_type"] == "llama"
    assert resolve_model_dir(str(tiny_model_dir)) == tiny_model_dir
    for missing in ("./nowhere", str(tmp_path / "absent"), "~/nope-sluicegate", "var/models/x"):
        with pytest.raises(ValueError, match="does not exist"):
            resolve_model_dir(missing)


def _product(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
