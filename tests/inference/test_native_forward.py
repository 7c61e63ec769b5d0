"""The C forward's pieces against torch: the packed matmul, and whole steps of a Llama."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.models import native
from inference.models.native_llama import NativeLlama, bind, pack_linear, pack_swiglu
from inference.params import SamplingParams


@pytest.fixture(scope="module")
def kernel() -> ctypes.CDLL:
    library = native.load()
    if library is None:
        pytest.skip("no C compiler: the C kernels cannot be built")
    bind(library)
    return library


def gemm(kernel: ctypes.CDLL, a: torch.Tensor, packed: object, out: torch.Tensor, *,
         add: bool = False, threads: int = 1) -> None:  # fmt: skip
    """Every thread's share of the panels, one after the other (as a parallel region would)."""
    for tid in range(threads):
        kernel.sg_gemm(
            a.data_ptr(), a.shape[1], a.shape[0], ctypes.byref(packed), out.data_ptr(),
            out.shape[1], int(add), tid, threads,
        )  # fmt: skip


@pytest.mark.parametrize("rows", [1, 5, 6, 13])
@pytest.mark.parametrize(("n", "k"), [(16, 8), (37, 19), (100, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_matmul_matches_linear(
    kernel: ctypes.CDLL, rows: int, n: int, k: int, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(rows * 1000 + n + k)
    a = torch.randn(rows, k, generator=generator)
    weight = torch.randn(n, k, generator=generator).to(dtype)
    bias = torch.randn(n, generator=generator)
    expected = F.linear(a, weight.float(), bias)
    packed, keep = pack_linear(weight, bias)
    out = torch.full((rows, n), float("nan"))
    gemm(kernel, a, packed, out, threads=3)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    residual = torch.randn(rows, n, generator=generator)
    out = residual.clone()
    gemm(kernel, a, packed, out, add=True, threads=2)
    torch.testing.assert_close(out, residual + expected, atol=1e-4, rtol=1e-5)
    del keep


@pytest.mark.parametrize(("f", "rows"), [(8, 1), (21, 7), (64, 12)])
def test_swiglu_panels_emit_silu_gate_times_up(kernel: ctypes.CDLL, f: int, rows: int) -> None:
    generator = torch.Generator().manual_seed(f + rows)
    a = torch.randn(rows, 24, generator=generator)
    weight = torch.randn(2 * f, 24, generator=generator)  # gate rows, then up rows
    bias = torch.randn(2 * f, generator=generator)
    gate, up = F.linear(a, weight, bias).chunk(2, dim=-1)
    packed, keep = pack_swiglu(weight, bias)
    out = torch.full((rows, f), float("nan"))
    gemm(kernel, a, packed, out, threads=2)
    torch.testing.assert_close(out, F.silu(gate) * up, atol=1e-4, rtol=1e-4)
    del keep


def _greedy_tokens(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for delta in engine.step():
            tokens.setdefault(delta.request_id, []).extend(delta.token_ids)
    return [tokens[f"r{i}"] for i in range(len(prompts))]


def test_native_forward_is_chosen_for_llama_and_matches_torch(tiny_llama_dir: Path) -> None:
    """The tiny Llama (tied embeddings, GQA) through both paths: same greedy tokens."""
    options = EngineOptions(num_kv_blocks=64, block_size=4, max_num_batched_tokens=16)
    prompts = [[1, 5, 9, 200, 3, 17, 44], [1, 8, 8, 8], [1, *range(30, 60)]]
    fast = LLMEngine(tiny_llama_dir, options)
    assert isinstance(fast.runner.model, NativeLlama)
    slow = LLMEngine(tiny_llama_dir, EngineOptions(**{**vars(options), "forward": "torch"}))
    assert not isinstance(slow.runner.model, NativeLlama)
    assert _greedy_tokens(fast, prompts) == _greedy_tokens(slow, prompts)


def test_forward_option(tiny_model_dir: Path, tiny_llama_dir: Path) -> None:
    with pytest.raises(ValueError, match="forward must be one of"):
        EngineOptions(forward="jit")
    with pytest.raises(ValueError, match="Llama-family models only"):
        LLMEngine(tiny_model_dir, EngineOptions(num_kv_blocks=8, forward="native"))
    gpt2 = LLMEngine(tiny_model_dir, EngineOptions(num_kv_blocks=8))  # auto: torch for GPT-2
    assert not isinstance(gpt2.runner.model, NativeLlama)


def test_many_decodes_at_once_match_torch(tiny_llama_dir: Path) -> None:
    """12 decodes a step on 2 threads: attention is split by row (every kv head of a row in
    one unit, its RoPE and key store there too), not by (row, kv head) as with 3 rows."""
    prompts = [[1, *range(10 + i, 10 + i + 3 + 2 * i)] for i in range(12)]
    options = EngineOptions(num_kv_blocks=256, block_size=4, num_threads=2)
    fast = LLMEngine(tiny_llama_dir, options)
    assert isinstance(fast.runner.model, NativeLlama)
    slow = LLMEngine(tiny_llama_dir, EngineOptions(**{**vars(options), "forward": "torch"}))
    assert _greedy_tokens(fast, prompts) == _greedy_tokens(slow, prompts)
