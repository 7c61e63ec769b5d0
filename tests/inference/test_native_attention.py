"""The C decode-attention kernel against plain torch attention, and its fallbacks."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor

from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.models import native


@pytest.fixture(scope="module")
def kernel() -> ctypes.CDLL:
    library = native.load()
    if library is None:
        pytest.skip("no C compiler: the native attention kernel cannot be built")
    return library


def reference(
    q: Tensor, k_pool: Tensor, v_pool: Tensor, tables: Tensor, lengths: Tensor, block_size: int
) -> Tensor:
    """Gather each context through its block table, then textbook attention."""
    heads, kv_heads, head_dim = q.shape[1], k_pool.shape[1], q.shape[2]
    out = torch.empty_like(q)
    for s, length in enumerate(lengths.tolist()):
        positions = torch.arange(length)
        slots = tables[s][positions // block_size] * block_size + positions % block_size
        keys = k_pool[slots].repeat_interleave(heads // kv_heads, dim=1)  # [t, H, D]
        values = v_pool[slots].repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("hd,thd->ht", q[s].double(), keys.double()) / head_dim**0.5
        out[s] = torch.einsum("ht,thd->hd", scores.softmax(-1), values.double()).float()
    return out


@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim", "block_size"),
    [(4, 4, 16, 4), (8, 2, 32, 16), (12, 12, 64, 16), (9, 3, 64, 16), (6, 1, 8, 3)],
)
def test_matches_reference_attention(
    kernel: ctypes.CDLL, heads: int, kv_heads: int, head_dim: int, block_size: int
) -> None:
    generator = torch.Generator().manual_seed(heads * 100 + block_size)
    num_blocks = 64
    k_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=generator)
    v_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=generator)
    # one token, exactly one block, one past a block, and a long context
    lengths = torch.tensor([1, block_size, block_size + 1, 9 * block_size - 2])
    width = -(-int(lengths.max()) // block_size)
    # scattered, non-overlapping blocks; unused table entries padded with block 0
    order = torch.randperm(num_blocks, generator=generator)
    tables = torch.zeros(len(lengths), width, dtype=torch.long)
    used = 0
    for s, length in enumerate(lengths.tolist()):
        count = -(-length // block_size)
        tables[s, :count] = order[used : used + count]
        used += count
    q = torch.randn(len(lengths), heads, head_dim, generator=generator)
    out = torch.full_like(q, float("nan"))
    native.decode_attention(
        kernel, q, (k_pool, v_pool), tables, lengths, out, block_size=block_size
    )
    expected = reference(q, k_pool, v_pool, tables, lengths, block_size)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    # a one-token context attends only to itself
    torch.testing.assert_close(
        out[0], v_pool[tables[0, 0] * block_size].repeat_interleave(heads // kv_heads, 0)
    )


def test_a_missing_or_failing_compiler_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLUICEGATE_KERNEL_CACHE", str(tmp_path))
    build = native.load.__wrapped__  # the uncached builder
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        assert build() is None
        monkeypatch.setenv("CC", "false")  # found, but every build fails
        assert build() is None
    assert "no C compiler" in caplog.text and "failed" in caplog.text
    assert not list(tmp_path.glob("*.so"))  # nothing half-built is left to load


def test_the_library_is_cached_per_source_and_cpu(
    kernel: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLUICEGATE_KERNEL_CACHE", str(tmp_path))
    assert native.load.__wrapped__() is not None
    [built] = tmp_path.glob("sluicegate-kernels-*.so")
    stamp = built.stat().st_mtime_ns
    assert native.load.__wrapped__() is not None  # a second engine reuses the build
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("*.so")] == [stamp]


def test_bfloat16_pools_are_widened_exactly(kernel: ctypes.CDLL) -> None:
    """bfloat16 keys and values, float32 arithmetic: the same as attention on the widened pool."""
    generator = torch.Generator().manual_seed(7)
    block_size, heads, kv_heads, head_dim = 4, 8, 2, 16
    k_pool = torch.randn(32 * block_size, kv_heads, head_dim, generator=generator).bfloat16()
    v_pool = torch.randn(32 * block_size, kv_heads, head_dim, generator=generator).bfloat16()
    tables = torch.randperm(32, generator=generator)[:30].view(3, 10).contiguous()
    lengths = torch.tensor([1, 17, 40])
    q = torch.randn(3, heads, head_dim, generator=generator)
    expected = reference(q, k_pool.float(), v_pool.float(), tables, lengths, block_size)
    out = torch.empty_like(q)
    native.decode_attention(kernel, q, (k_pool, v_pool), tables, lengths, out, block_size=4)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    # bfloat16 queries and outputs (the engine in bfloat16): float32 inside, rounded once
    q16, out16 = q.bfloat16(), torch.empty_like(q, dtype=torch.bfloat16)
    native.decode_attention(kernel, q16, (k_pool, v_pool), tables, lengths, out16, block_size=4)
    native.decode_attention(
        kernel, q16.float(), (k_pool, v_pool), tables, lengths, out, block_size=4
    )
    assert torch.equal(out16, out.bfloat16())


def test_attention_option_is_validated(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="attention must be one of"):
        EngineOptions(attention="flash")
    options = EngineOptions(dtype="bfloat16", num_kv_blocks=8, attention="torch")
    assert LLMEngine(tiny_model_dir, options).runner.kernel is None
    options = EngineOptions(dtype="bfloat16", num_kv_blocks=8, attention="native")
    assert LLMEngine(tiny_model_dir, options).runner.kernel is not None
