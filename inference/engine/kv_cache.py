"""The paged KV cache's bookkeeping: a fixed pool of blocks, block tables, prefix caching.

No tensors here: the pool itself lives in the model runner; this module only decides which
block ids each sequence owns. A block holds `block_size` consecutive token positions.

Prefix caching: once a FULL block's tokens have been computed, the block is registered under
a chained hash of (parent block's hash, the block's token ids), so the hash names the whole
prefix up to and including this block. A later sequence whose prompt starts with the same
tokens reuses those blocks (ref count + 1) instead of recomputing them. Blocks whose ref count
drops to 0 stay in the cache and sit in an LRU free list; they are evicted (their hash
forgotten) only when the pool needs a fresh block. Only full blocks are ever shared, so no
block is ever written by two sequences and no copy-on-write is needed: a partially filled last
block is always private (see `fork`).

Hashes are SHA-256 rather than Python's `hash()` because a collision would hand one tenant's
keys and values to another tenant's request.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence

BlockHash = bytes


def hash_block(parent: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """The chained hash naming a full block: its tokens and, through `parent`, all before it."""
    digest = hashlib.sha256(parent or b"")
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class NoFreeBlocks(RuntimeError):
    """Raised when an allocation was not checked with `can_*` first (a scheduler bug)."""


class BlockManager:
    """Owns the block pool: ref counts, the LRU free list, block tables and the prefix cache."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError("num_kv_blocks must be at least 1")
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._hash: list[BlockHash | None] = [None] * num_blocks  # set while registered
        self._cached: dict[BlockHash, int] = {}
        # Blocks with ref count 0, least recently used first; allocation takes from the front.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._tables: dict[int, list[int]] = {}
        self._chain: dict[int, list[BlockHash]] = {}  # seq id -> hashes of its full blocks
        self.queried_tokens = 0
        self.hit_tokens = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_table(self, seq_id: int) -> list[int]:
        return self._tables.get(seq_id, [])

    def ref_count(self, block_id: int) -> int:
        return self._ref[block_id]

    def lookup_prefix(self, token_ids: Sequence[int], max_blocks: int) -> list[int]:
        """Ids of cached blocks holding the longest cached prefix of `token_ids` (no refs taken)."""
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        hits: list[int] = []
        parent: BlockHash | None = None
        for i in range(min(max_blocks, len(token_ids) // bs)):
            parent = hash_block(parent, token_ids[i * bs : (i + 1) * bs])
            block = self._cached.get(parent)
            if block is None:
                break
            hits.append(block)
        return hits

    # -- allocation ------------------------------------------------------------------------

    def can_allocate(self, num_tokens: int, cached: Sequence[int] = ()) -> bool:
        """Whether a new sequence reusing `cached` blocks can hold `num_tokens` positions."""
        needed = self.blocks_for(num_tokens) - len(cached)
        revived = sum(1 for b in cached if self._ref[b] == 0)  # cached but counted as free
        return needed <= len(self._free) - revived

    def allocate(
        self,
        seq_id: int,
        token_ids: Sequence[int],
        num_tokens: int,
        cached: Sequence[int] = (),
    ) -> None:
        """Give a new sequence the `cached` prefix blocks plus fresh blocks up to `num_tokens`."""
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id} already has blocks")
        if not self.can_allocate(num_tokens, cached):
            raise NoFreeBlocks(f"cannot allocate {num_tokens} tokens")
        for block in cached:
            if self._ref[block] == 0:
                del self._free[block]
            self._ref[block] += 1
        self._tables[seq_id] = list(cached)
        self._chain[seq_id] = [h for h in (self._hash[b] for b in cached) if h is not None]
        self.queried_tokens += len(token_ids)
        self.hit_tokens += len(cached) * self.block_size
        self.grow(seq_id, num_tokens)

    def can_grow(self, seq_id: int, num_tokens: int) -> bool:
        needed = self.blocks_for(num_tokens) - len(self._tables[seq_id])
        return needed <= len(self._free)

    def grow(self, seq_id: int, num_tokens: int) -> None:
        """Append fresh blocks so the sequence's table covers `num_tokens` positions."""
        table = self._tables[seq_id]
        needed = self.blocks_for(num_tokens) - len(table)
        if needed > len(self._free):
            raise NoFreeBlocks(f"cannot grow sequence {seq_id} to {num_tokens} tokens")
        for _ in range(needed):
            table.append(self._take_free_block())

    def _take_free_block(self) -> int:
        block, _ = self._free.popitem(last=False)
        stale = self._hash[block]
        if stale is not None:  # evict: its contents are about to be overwritten
            del self._cached[stale]
            self._hash[block] = None
        self._ref[block] = 1
        return block

    def fork(self, parent_id: int, child_id: int, num_blocks: int) -> None:
        """Share the parent's first `num_blocks` (full, computed) blocks with a new child.

        The caller passes only full blocks; the child recomputes the tokens of the parent's
        partially filled last block into a private block, so shared blocks are never written.
        """
        if child_id in self._tables:
            raise ValueError(f"sequence {child_id} already has blocks")
        shared = self._tables[parent_id][:num_blocks]
        for block in shared:
            self._ref[block] += 1
        self._tables[child_id] = list(shared)
        self._chain[child_id] = self._chain.get(parent_id, [])[:num_blocks]

    def commit(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Register the sequence's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        table = self._tables[seq_id]
        chain = self._chain[seq_id]
        for i in range(len(chain), num_computed // bs):
            block_hash = hash_block(chain[-1] if chain else None, token_ids[i * bs : (i + 1) * bs])
            chain.append(block_hash)
            block = table[i]
            # The same content may already be cached in another block (two sequences computed
            # it in the same step); keep the first and leave this one private.
            if block_hash not in self._cached and self._hash[block] is None:
                self._cached[block_hash] = block
                self._hash[block] = block_hash

    def free(self, seq_id: int) -> None:
        """Drop the sequence's references; unshared cached blocks stay reusable until evicted."""
        table = self._tables.pop(seq_id, [])
        self._chain.pop(seq_id, None)
        # Tail first, so that a prompt's leading (most shareable) blocks are evicted last.
        for block in reversed(table):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                self._free[block] = None
                if self._hash[block] is None:  # worthless: reuse before any cached block
                    self._free.move_to_end(block, last=False)
