"""GGUF checkpoints: small files written by `tests/inference/gguf_files.py` from the tiny Llama.

The loader must reproduce the float model exactly from an F32 file, the written (quantized)
weights exactly from a file of mixed types, generate token for token what the same weights
loaded from a Hugging Face directory generate, and build the same tokenizer from the metadata
as from `tokenizer.json`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from gguf import GGUFWriter
from safetensors.numpy import load_file

from inference.checkpoints.gguf.file import GGUFFile, UnsupportedArchitecture
from inference.checkpoints.gguf.weights import read_weights
from inference.checkpoints.hub import default_model_id, resolve_model_dir
from inference.checkpoints.loader import load_checkpoint, load_config, load_tokenizer
from inference.llm import LLM
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer
from tests.inference.gguf_files import MIXED_TYPES, Q, save_as_checkpoint, write_gguf
from tests.inference.hf_checkpoints import (
    build_model,
    random_prompts,
    reference_generate,
    save_checkpoint,
)
from tests.inference.server_process import API_KEY, ServerProcess

PROMPTS = [
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog and then",
    "a",
    "Numbers: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25",
]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
# Largest error of one weight after a round trip, as a fraction of the tensor's largest weight.
ROUND_TRIP_BOUND = {Q.F32: 0.0, Q.F16: 2**-10, Q.BF16: 2**-7, Q.Q8_0: 1 / 127, Q.Q4_0: 1 / 7,
                    Q.Q4_1: 1 / 15}  # fmt: skip


@pytest.fixture(scope="module")
def f32_gguf(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf"
    write_gguf(tiny_llama_dir, path)
    return path


@pytest.fixture(scope="module", params=["untied", "tied"])
def mixed(
    request: pytest.FixtureRequest, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A GGUF of every supported type, and the same weights as a Hugging Face directory."""
    root = tmp_path_factory.mktemp("gguf")
    tied = request.param == "tied"
    path = root / f"tiny-llama-mixed-{request.param}.gguf"
    held = write_gguf(tiny_llama_dir, path, types=MIXED_TYPES, tied=tied)
    return path, save_as_checkpoint(tiny_llama_dir, held, root / "hf"), held


def _greedy(llm: LLM, prompts: list[list[int]]) -> list[list[int]]:
    return [list(out.outputs[0].token_ids) for out in llm.generate(prompts, GREEDY)]


def _token_prompts(tokenizer: Tokenizer) -> list[list[int]]:
    return [tokenizer.encode(p) for p in PROMPTS]


def test_f32_file_is_the_float_model(f32_gguf: Path, tiny_llama_dir: Path) -> None:
    ours, reference = load_checkpoint(f32_gguf), load_checkpoint(tiny_llama_dir)
    expected = reference.model.state_dict()
    loaded = ours.model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    for field in ("arch", "vocab_size", "hidden_size", "num_layers", "num_heads",
                  "num_kv_heads", "head_dim", "intermediate_size", "max_position_embeddings",
                  "tie_word_embeddings", "rope_theta", "bos_token_id"):  # fmt: skip
        assert getattr(ours.config, field) == getattr(reference.config, field), field
    assert ours.config.norm_eps == pytest.approx(reference.config.norm_eps)


def test_f32_file_generates_what_the_checkpoint_generates(
    f32_gguf: Path, tiny_llama_dir: Path
) -> None:
    reference = LLM(str(tiny_llama_dir), num_kv_blocks=256)
    ours = LLM(str(f32_gguf), num_kv_blocks=256)
    prompts = _token_prompts(reference.tokenizer)
    expected = _greedy(reference, prompts)
    assert _greedy(ours, prompts) == expected  # batched
    assert [_greedy(ours, [p])[0] for p in prompts] == expected  # one at a time


def test_every_type_dequantizes_to_what_was_written(
    mixed: tuple[Path, Path, dict[str, np.ndarray]], tiny_llama_dir: Path
) -> None:
    path, _, held = mixed
    gguf = GGUFFile.open(path)
    assert {t.tensor_type for t in gguf.reader.tensors} == set(MIXED_TYPES.values()) | {Q.F32}
    weights = read_weights(gguf, load_config(path))
    assert weights.keys() == held.keys()
    for name, values in held.items():
        assert np.array_equal(weights[name].numpy(), values), name
    # ... and those are the float weights within each type's rounding.
    reference = _hf_weights(tiny_llama_dir)
    for name, values in held.items():
        kind = next((t for part, t in MIXED_TYPES.items() if f"{part}." in name), Q.F32)
        scale = float(np.abs(reference[name]).max())
        error = float(np.abs(values - reference[name]).max())
        assert error <= ROUND_TRIP_BOUND[kind] * scale + 1e-7, (name, kind.name, error / scale)


def test_every_type_generates_as_the_same_weights_loaded_normally(
    mixed: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    path, directory, held = mixed
    reference = LLM(str(directory), num_kv_blocks=256)
    ours = LLM(str(path), num_kv_blocks=256)
    assert ours.engine.config.tie_word_embeddings == ("lm_head.weight" not in held)
    prompts = _token_prompts(reference.tokenizer)
    expected = _greedy(reference, prompts)
    assert _greedy(ours, prompts) == expected
    assert [_greedy(ours, [p])[0] for p in prompts] == expected


def test_bfloat16_engine_loads_a_gguf(mixed: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    path, directory, _ = mixed
    ours = LLM(str(path), num_kv_blocks=64, dtype="bfloat16")
    reference = LLM(str(directory), num_kv_blocks=64, dtype="bfloat16")
    prompts = _token_prompts(reference.tokenizer)[:2]
    assert _greedy(ours, prompts) == _greedy(reference, prompts)


TEXTS = [
    "Hello, world!",
    "  leading spaces and   runs\t\tof\n\n\nwhitespace  ",
    "unicode: naïve café, 日本語, emoji 🦙🚀, ∑x²",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "digits 1234567890 and 3.14159",
    "",
]


def test_tokenizer_from_metadata_is_the_checkpoint_tokenizer(
    f32_gguf: Path, tiny_llama_dir: Path
) -> None:
    ours, reference = load_tokenizer(f32_gguf), Tokenizer.from_dir(tiny_llama_dir)
    for text in TEXTS:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_special_tokens=False) == reference.encode(
            text, add_special_tokens=False
        )
        assert ours.decode(ids) == reference.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(
            ids, skip_special_tokens=False
        )
    assert ours.add_bos_token and ours.bos_token == reference.bos_token == "<|begin_of_text|>"
    assert ours.eos_token_ids == reference.eos_token_ids == {0, 2}  # EOS and <|im_end|>
    assert ours.special_token_ids == reference.special_token_ids
    assert ours.vocab_size == reference.vocab_size
    assert [ours.token_bytes(i) for i in range(300)] == [
        reference.token_bytes(i) for i in range(300)
    ]
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Bonjour 🦙"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"},
    ]
    for add in (True, False):
        rendered = ours.apply_chat_template(conversation, add_generation_prompt=add)
        assert rendered == reference.apply_chat_template(conversation, add_generation_prompt=add)
    assert rendered.startswith("<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n")


def test_end_of_turn_from_metadata_stops_generation(f32_gguf: Path) -> None:
    llm = LLM(str(f32_gguf), num_kv_blocks=64)
    im_end = llm.tokenizer.token_to_id("<|im_end|>")
    assert im_end == 2
    forced = SamplingParams(max_tokens=8, temperature=0.0, logit_bias={im_end: 100.0})
    (out,) = llm.generate("Hello", forced)
    assert out.outputs[0].finish_reason == "stop"
    assert out.outputs[0].text == ""
    assert out.outputs[0].token_ids in ([], [im_end])


def test_unsupported_architecture_is_named(tiny_llama_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "other.gguf"
    write_gguf(tiny_llama_dir, path, architecture="mamba")
    with pytest.raises(UnsupportedArchitecture, match="'mamba' is not supported") as caught:
        LLM(str(path))
    assert caught.value.architecture == "mamba"
    assert isinstance(caught.value, ValueError)


def test_rope_scaling_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "scaled.gguf"

    def scaled(writer: GGUFWriter) -> None:
        writer.add_string("llama.rope.scaling.type", "yarn")

    write_gguf(tiny_llama_dir, path, edit=scaled)
    with pytest.raises(ValueError, match="RoPE scaling 'yarn' is not supported"):
        load_config(path)


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ValueError, match=r"broken\.gguf is not a readable GGUF file"):
        load_config(path)


def test_names_and_paths(f32_gguf: Path, tmp_path: Path) -> None:
    assert resolve_model_dir(str(f32_gguf)) == f32_gguf
    assert default_model_id(str(f32_gguf)) == "tiny-llama-f32"
    assert default_model_id("tiny") == "tiny"
    with pytest.raises(ValueError, match=r"model file .* does not exist"):
        resolve_model_dir(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "qwen2"])
def test_gguf_generates_what_transformers_generates(kind: str, tmp_path: Path) -> None:
    """Random Hugging Face models written as llama.cpp writes them (q/k rows permuted for
    `llama`, not for `qwen2`, whose q/k/v biases come along): transformers' greedy tokens."""
    model = build_model(kind)
    path = tmp_path / f"{kind}.gguf"
    architecture = "qwen2" if kind == "qwen2" else "llama"
    write_gguf(save_checkpoint(model, tmp_path / kind), path, architecture=architecture)
    llm = LLM(str(path), num_kv_blocks=128, block_size=8)
    assert llm.tokenizer is None  # a GGUF without tokenizer metadata: token ids only
    assert llm.engine.config.tie_word_embeddings == (kind == "llama-tied")
    assert llm.engine.config.qkv_bias == (kind == "qwen2")
    prompts = random_prompts(4, 1, 40, seed=3)
    outputs = llm.generate(prompts, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True))
    for prompt, output in zip(prompts, outputs, strict=True):
        assert list(output.outputs[0].token_ids) == reference_generate(model, prompt, 10)
    with pytest.raises(ValueError, match="has no tokenizer"):
        load_tokenizer(path)


def test_inference_server_names_a_gguf_model_by_its_stem(f32_gguf: Path, tmp_path: Path) -> None:
    server = ServerProcess(f32_gguf, tmp_path, name="gguf-server", served_name=None)
    server.start()
    try:
        server.wait_ready()
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["tiny-llama-f32"]
            chat = client.chat.completions.create(
                model="tiny-llama-f32",
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=3,
                logit_bias={"2": 100},  # <|im_end|>, an end-of-generation token in the file
            )
    finally:
        server.stop()
    assert chat.choices[0].finish_reason == "stop"
    assert chat.choices[0].message.content == ""
    assert chat.usage is not None and chat.usage.completion_tokens == 1


def _hf_weights(directory: Path) -> dict[str, np.ndarray]:
    tensors = load_file(directory / "model.safetensors")
    return {name.removeprefix("model."): value for name, value in tensors.items()}
