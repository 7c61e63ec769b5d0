"""Attention over a flat packed batch whose keys and values live in a paged KV pool.

A step's tokens are concatenated into one `[T, ...]` batch: first the decode tokens (one query
per sequence, sorted by context length), then each prefill chunk. New keys and values are
written to their pool slots (`slot = block_id * block_size + offset`). Decodes then attend
either with the C kernel (`native.py`), which reads every context straight from its blocks, or
(without a C compiler) in small groups of similar length whose contexts are gathered through
the block tables into a workspace. Each prefill chunk attends on its own
(causal, offset by any prefix already in the cache).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inference.models.native import decode_attention


@dataclass
class DecodeGroup:
    """Consecutive single-token rows attending together, their contexts padded to `width`."""

    start: int  # rows [start, end) of the flat batch
    end: int
    width: int
    slots: Tensor  # [(end - start) * width] pool slots of each row's context, padded
    mask: Tensor | None  # [end - start, 1, 1, width] bool; None when nothing is padded


@dataclass
class NativeDecodes:
    """The first `count` rows are decodes, attended by the C kernel from the pool itself."""

    count: int  # at least 1
    library: ctypes.CDLL
    block_tables: Tensor  # [count, max_blocks] int64, padded with block 0
    context_lens: Tensor  # [count] int64, including the row's own token
    block_size: int


@dataclass
class PrefillSpan:
    start: int  # rows [start, end) of the flat batch
    end: int
    kv_slots: Tensor | None  # pool slots of positions [0, context); None: no cached prefix
    mask: Tensor | None  # [queries, context] bool, True = may attend; None with kv_slots None


@dataclass
class AttentionMetadata:
    slot_mapping: Tensor  # [T] pool slot of every token of the step
    decodes: list[DecodeGroup]  # empty when `native` handles the decodes
    prefills: list[PrefillSpan]
    native: NativeDecodes | None
    workspace: KVCache  # scratch for gathered keys and values, reused by every layer


KVCache = tuple[Tensor, Tensor]  # keys, values: [num_slots, num_kv_heads, head_dim] each


def paged_attention(
    q: Tensor, k: Tensor, v: Tensor, cache: KVCache, meta: AttentionMetadata
) -> Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] of this step's tokens. Returns [T, H * D]."""
    k_cache, v_cache = cache
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    num_tokens, heads, head_dim = q.shape
    gqa = heads != k.shape[1]
    out = q.new_empty(num_tokens, heads, head_dim)
    if meta.native is not None:
        n = meta.native.count
        decode_attention(
            meta.native.library,
            q[:n].contiguous(),
            cache,
            meta.native.block_tables,
            meta.native.context_lens,
            out[:n],
            block_size=meta.native.block_size,
        )
    for group in meta.decodes:
        rows = group.end - group.start
        keys, values = _gather(cache, group.slots, meta.workspace)
        attended = F.scaled_dot_product_attention(
            q[group.start : group.end].unsqueeze(2),
            keys.view(rows, group.width, *k.shape[1:]).transpose(1, 2),
            values.view(rows, group.width, *k.shape[1:]).transpose(1, 2),
            attn_mask=group.mask,
            enable_gqa=gqa,
        )
        out[group.start : group.end] = attended.squeeze(2)
    for span in meta.prefills:
        queries = q[span.start : span.end].transpose(0, 1).unsqueeze(0)
        if span.kv_slots is None:  # the whole context is this chunk: plain causal attention
            keys, values = k[span.start : span.end], v[span.start : span.end]
        else:
            keys, values = _gather(cache, span.kv_slots, meta.workspace)
        attended = F.scaled_dot_product_attention(
            queries,
            keys.transpose(0, 1).unsqueeze(0),
            values.transpose(0, 1).unsqueeze(0),
            attn_mask=span.mask,
            is_causal=span.kv_slots is None,
            enable_gqa=gqa,
        )
        out[span.start : span.end] = attended[0].transpose(0, 1)
    return out.view(num_tokens, heads * head_dim)


def _gather(cache: KVCache, slots: Tensor, workspace: KVCache) -> tuple[Tensor, Tensor]:
    """Keys and values at `slots`, copied into the (cache-warm, preallocated) workspace.

    Fresh tensors this large would be page-faulted in on every call, and one group at a time
    keeps the copy in cache while attention reads it: several times faster than gathering
    the whole batch at once.
    """
    count = slots.numel()
    keys = torch.index_select(cache[0], 0, slots, out=workspace[0][:count])
    values = torch.index_select(cache[1], 0, slots, out=workspace[1][:count])
    return keys, values
