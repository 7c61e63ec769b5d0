"""One engine step on the model: build the flat batch, run it, sample.

The model is the torch `GPT2`/`Llama` (attention metadata per decode group and prefill span)
or `NativeLlama`, the C forward (per-row block tables; see `inference/models/native_llama.py`).
Owns the KV pool (one keys and one values tensor per layer, `[num_blocks * block_size,
kv_heads, head_dim]`, allocated once) and the per-sequence seeded generators.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.engine.kv_cache import BlockManager
from inference.engine.sampler import SamplingRow, sample, token_logprobs
from inference.engine.scheduler import ScheduledSeq, SchedulerOutput
from inference.engine.sequence import Sequence
from inference.models.attention import (
    AttentionMetadata,
    DecodeGroup,
    KVCache,
    NativeDecodes,
    PrefillSpan,
)
from inference.models.config import ModelConfig
from inference.models.gpt2 import GPT2
from inference.models.llama import Llama
from inference.models.native_llama import NativeBatch, NativeLlama
from inference.outputs import TokenLogprob

# Decodes attend in groups of similar context length whose padded contexts hold at most this
# many slots: big enough to amortise per-call overhead, small enough to stay in cache.
DECODE_GROUP_SLOTS = 2048


@dataclass
class Sampled:
    seq: Sequence
    token_id: int
    logprob: TokenLogprob | None


@dataclass
class StepResult:
    sampled: list[Sampled]
    # seq id -> (position of the first token scored, logprobs of prompt tokens from there on)
    prompt_logprobs: dict[int, tuple[int, list[TokenLogprob]]]


@dataclass
class _Batch:
    input_ids: Tensor
    positions: Tensor
    meta: AttentionMetadata | NativeBatch
    order: list[ScheduledSeq]  # decodes first, then prefill chunks; rows follow this order
    offsets: list[int]  # first row of each item


class ModelRunner:
    def __init__(
        self,
        model: GPT2 | Llama | NativeLlama,
        config: ModelConfig,
        block_manager: BlockManager,
        *,
        dtype: torch.dtype,
        max_model_len: int,
        kernel: ctypes.CDLL | None = None,  # the C decode-attention kernel
    ):
        self.model = model
        self.native = isinstance(model, NativeLlama)  # its steps take a NativeBatch
        self.kernel = kernel
        self.config = config
        self.block_manager = block_manager
        slots = block_manager.num_blocks * block_manager.block_size
        shape = (slots, config.num_kv_heads, config.head_dim)
        # Zeros, not empty: padded decode positions read (masked) slots, and 0 x NaN is NaN.
        self.kv_caches: list[KVCache] = [
            (torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
            for _ in range(config.num_layers)
        ]
        rows = max(DECODE_GROUP_SLOTS, max_model_len)
        ws_shape = (rows, config.num_kv_heads, config.head_dim)
        self.workspace = (torch.empty(ws_shape, dtype=dtype), torch.empty(ws_shape, dtype=dtype))
        self._generators: dict[int, torch.Generator] = {}

    @staticmethod
    def kv_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * element

    def release(self, seq_id: int) -> None:
        self._generators.pop(seq_id, None)

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> StepResult:
        batch = self._build(output.scheduled)
        # _build made the metadata of this model's kind (NativeBatch for NativeLlama)
        model, meta = self.model, batch.meta
        hidden = model(batch.input_ids, batch.positions, self.kv_caches, meta)  # type: ignore[arg-type]
        rows: list[int] = []
        seqs: list[Sequence] = []
        for item, offset in zip(batch.order, batch.offsets, strict=True):
            if item.samples:
                for seq in [item.seq, *item.forks]:
                    rows.append(offset + item.num_tokens - 1)
                    seqs.append(seq)
        sampled = self._sample(hidden, rows, seqs) if rows else []
        return StepResult(sampled, self._prompt_logprobs(hidden, batch))

    # -- batch -----------------------------------------------------------------------------

    def _build(self, scheduled: list[ScheduledSeq]) -> _Batch:
        bs = self.block_manager.block_size
        decodes = sorted((s for s in scheduled if s.num_tokens == 1), key=lambda s: s.start)
        order = decodes + [s for s in scheduled if s.num_tokens > 1]
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        offsets: list[int] = []
        tables = [self.block_manager.block_table(item.seq.seq_id) for item in order]
        for item, table in zip(order, tables, strict=True):
            offsets.append(len(ids))
            end = item.start + item.num_tokens
            ids.extend(item.seq.token_ids[item.start : end])
            positions.extend(range(item.start, end))
            slots.extend(table[p // bs] * bs + p % bs for p in range(item.start, end))
        input_ids, input_positions = torch.tensor(ids), torch.tensor(positions)
        if self.native:
            step = _native_batch(order, tables, slots, bs)
            return _Batch(input_ids, input_positions, step, order, offsets)
        prefills = [
            self._prefill_span(item, table, offset)
            for item, table, offset in zip(order, tables, offsets, strict=True)
            if item.num_tokens > 1
        ]
        decode_tables = tables[: len(decodes)]
        native = self._native_decodes(decodes, decode_tables)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long),
            decodes=[] if native else self._decode_groups(decodes, decode_tables),
            prefills=prefills,
            native=native,
            workspace=self.workspace,
        )
        return _Batch(input_ids, input_positions, meta, order, offsets)

    def _native_decodes(
        self, items: list[ScheduledSeq], tables: list[list[int]]
    ) -> NativeDecodes | None:
        """Decodes for the C kernel: padded block tables and context lengths (None: no kernel)."""
        if not items or self.kernel is None:
            return None
        bs = self.block_manager.block_size
        lengths = [item.start + 1 for item in items]
        width = -(-max(lengths) // bs)
        padded = [t[:width] + [0] * (width - len(t[:width])) for t in tables]
        return NativeDecodes(
            count=len(items),
            library=self.kernel,
            block_tables=torch.tensor(padded, dtype=torch.long),
            context_lens=torch.tensor(lengths, dtype=torch.long),
            block_size=bs,
        )

    def _decode_groups(
        self, items: list[ScheduledSeq], tables: list[list[int]]
    ) -> list[DecodeGroup]:
        """Split decodes (sorted by context length) into groups that fit the workspace."""
        groups: list[DecodeGroup] = []
        first = 0
        for i in range(1, len(items) + 1):
            # items are sorted, so the group's width is the context of its last member
            if i == len(items) or (i - first + 1) * (items[i].start + 1) > DECODE_GROUP_SLOTS:
                groups.append(self._decode_group(items[first:i], tables[first:i], first))
                first = i
        return groups

    def _decode_group(
        self, items: list[ScheduledSeq], tables: list[list[int]], start: int
    ) -> DecodeGroup:
        bs = self.block_manager.block_size
        lengths = torch.tensor([item.start + 1 for item in items])
        width = int(lengths[-1])
        blocks = -(-width // bs)
        padded = torch.tensor([t[:blocks] + [0] * (blocks - len(t[:blocks])) for t in tables])
        pos = torch.arange(width)
        slots = (padded[:, pos // bs] * bs + pos % bs).reshape(-1)
        mask = (pos[None, :] < lengths[:, None])[:, None, None, :]
        uniform = int(lengths[0]) == width
        return DecodeGroup(start, start + len(items), width, slots, None if uniform else mask)

    def _prefill_span(self, item: ScheduledSeq, table: list[int], offset: int) -> PrefillSpan:
        end = offset + item.num_tokens
        if item.start == 0:
            return PrefillSpan(offset, end, None, None)
        bs = self.block_manager.block_size
        context = item.start + item.num_tokens
        pos = torch.arange(context)
        slots = torch.tensor(table)[pos // bs] * bs + pos % bs
        queries = item.start + torch.arange(item.num_tokens)
        return PrefillSpan(offset, end, slots, pos[None, :] <= queries[:, None])

    # -- sampling --------------------------------------------------------------------------

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        seed = seq.group.params.seed
        if seed is None:
            return None
        if seq.seq_id not in self._generators:
            # Each of the n completions draws its own stream, reproducibly.
            self._generators[seq.seq_id] = torch.Generator().manual_seed(seed + seq.index)
        return self._generators[seq.seq_id]

    def _sample(self, hidden: Tensor, rows: list[int], seqs: list[Sequence]) -> list[Sampled]:
        unique_rows = sorted(set(rows))
        logits = self.model.compute_logits(hidden[unique_rows]).float()
        logits = (
            logits[[unique_rows.index(r) for r in rows]] if len(unique_rows) < len(rows) else logits
        )
        sampling_rows = [
            SamplingRow(s.group.params, s.output_token_ids, self._generator(s)) for s in seqs
        ]
        tokens = sample(logits, sampling_rows)
        logprobs: list[TokenLogprob | None] = [None] * len(seqs)
        wanted = [i for i, s in enumerate(seqs) if s.group.params.logprobs is not None]
        if wanted:
            top = [seqs[i].group.params.logprobs or 0 for i in wanted]
            for i, lp in zip(
                wanted, token_logprobs(logits[wanted], tokens[wanted], top), strict=True
            ):
                logprobs[i] = lp
        return [
            Sampled(seq, token, lp)
            for seq, token, lp in zip(seqs, tokens.tolist(), logprobs, strict=True)
        ]

    def _prompt_logprobs(
        self, hidden: Tensor, batch: _Batch
    ) -> dict[int, tuple[int, list[TokenLogprob]]]:
        """Logprobs of prompt tokens scored by this step's chunks, for requests that ask."""
        result: dict[int, tuple[int, list[TokenLogprob]]] = {}
        for item, offset in zip(batch.order, batch.offsets, strict=True):
            seq, k = item.seq, item.seq.group.params.prompt_logprobs
            # Position p predicts token p + 1; only prompt tokens are scored here.
            last = min(item.start + item.num_tokens, seq.num_prompt_tokens - 1)
            if k is None or item.start >= last:
                continue
            count = last - item.start
            logits = self.model.compute_logits(hidden[offset : offset + count]).float()
            targets = torch.tensor(seq.token_ids[item.start + 1 : last + 1])
            result[seq.seq_id] = (item.start + 1, token_logprobs(logits, targets, [k] * count))
        return result


def _native_batch(
    order: list[ScheduledSeq], tables: list[list[int]], slots: list[int], block_size: int
) -> NativeBatch:
    """The C forward's metadata: row i of the batch reads its context through the block
    table of the item it belongs to."""
    counts = [item.num_tokens for item in order]
    return NativeBatch(
        slots=torch.tensor(slots, dtype=torch.long),
        row_table=torch.repeat_interleave(torch.arange(len(order)), torch.tensor(counts)),
        block_tables=_padded(tables),
        block_size=block_size,
        decodes_only=len(slots) == len(order),
    )


def _padded(tables: list[list[int]]) -> Tensor:
    """Block tables as one [len(tables), widest] int64 tensor, padded with block 0."""
    width = max(len(table) for table in tables)
    return torch.tensor([table + [0] * (width - len(table)) for table in tables], dtype=torch.long)
