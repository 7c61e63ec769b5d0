"""Attention over a flat packed batch whose keys and values live in a paged KV pool.

A step's tokens are concatenated into one `[T, ...]` batch: first the decode tokens (one query
per sequence), then each prefill chunk. New keys and values are written to their pool slots
(`slot = block_id * block_size + offset`); then decodes attend in one padded batch gathered
through their block tables, and each prefill chunk attends on its own (causal, offset by the
prefix already in the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass
class PrefillSpan:
    start: int  # rows [start, end) of the flat batch
    end: int
    kv_slots: Tensor | None  # pool slots of positions [0, context); None: no cached prefix
    mask: Tensor | None  # [queries, context] bool, True = may attend; None with kv_slots None


@dataclass
class AttentionMetadata:
    slot_mapping: Tensor  # [T] pool slot of every token of the step
    num_decodes: int  # rows [0, num_decodes) are single-token sequences
    decode_slots: Tensor | None  # [num_decodes * L] pool slots, padded per sequence to L
    decode_mask: Tensor | None  # [num_decodes, 1, 1, L] bool
    prefills: list[PrefillSpan]


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
    b = meta.num_decodes
    if b:
        assert meta.decode_slots is not None and meta.decode_mask is not None
        keys = k_cache.index_select(0, meta.decode_slots).view(b, -1, *k.shape[1:])
        values = v_cache.index_select(0, meta.decode_slots).view(b, -1, *k.shape[1:])
        attended = F.scaled_dot_product_attention(
            q[:b].unsqueeze(2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attn_mask=meta.decode_mask,
            enable_gqa=gqa,
        )
        out[:b] = attended.squeeze(2)
    for span in meta.prefills:
        queries = q[span.start : span.end].transpose(0, 1).unsqueeze(0)
        if span.kv_slots is None:  # the whole context is this chunk: plain causal attention
            keys, values = k[span.start : span.end], v[span.start : span.end]
        else:
            keys = k_cache.index_select(0, span.kv_slots)
            values = v_cache.index_select(0, span.kv_slots)
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
