"""BlockManager on plain lists: allocation, ref counts, prefix caching, LRU eviction, forks."""

from __future__ import annotations

import pytest

from inference.engine.kv_cache import BlockManager, NoFreeBlocks, hash_block


def test_allocate_grow_and_free_return_every_block() -> None:
    bm = BlockManager(8, 4)
    bm.allocate(1, list(range(6)), 6)
    assert len(bm.block_table(1)) == 2 and bm.num_free_blocks == 6
    bm.grow(1, 9)
    assert len(bm.block_table(1)) == 3
    bm.free(1)
    assert bm.num_free_blocks == 8 and bm.block_table(1) == []


def test_allocation_beyond_the_pool_is_refused() -> None:
    bm = BlockManager(2, 4)
    assert not bm.can_allocate(9)
    with pytest.raises(NoFreeBlocks):
        bm.allocate(1, list(range(9)), 9)
    bm.allocate(1, list(range(8)), 8)
    assert not bm.can_grow(1, 9)
    with pytest.raises(NoFreeBlocks):
        bm.grow(1, 9)


def test_prefix_is_cached_only_after_its_blocks_are_computed() -> None:
    bm = BlockManager(8, 4)
    prompt = list(range(10))
    bm.allocate(1, prompt, 10)
    assert bm.lookup_prefix(prompt, 2) == []  # allocated but not computed yet
    bm.commit(1, prompt, 10)  # two full blocks now computed; the partial one never cached
    assert bm.lookup_prefix(prompt, 9) == bm.block_table(1)[:2]
    assert bm.lookup_prefix(prompt, 1) == bm.block_table(1)[:1]


def test_shared_prefix_blocks_are_reference_counted() -> None:
    bm = BlockManager(8, 4)
    prompt = [*range(8), 100, 101]
    bm.allocate(1, prompt, 10)
    bm.commit(1, prompt, 10)
    other = [*range(8), 200]
    hits = bm.lookup_prefix(other, 2)
    bm.allocate(2, other, 9, hits)
    assert bm.block_table(2)[:2] == bm.block_table(1)[:2]
    assert [bm.ref_count(b) for b in hits] == [2, 2]
    assert bm.hit_tokens == 8 and bm.queried_tokens == 19
    bm.free(1)
    assert [bm.ref_count(b) for b in hits] == [1, 1]
    bm.free(2)
    assert bm.num_free_blocks == 8


def test_chained_hash_depends_on_everything_before() -> None:
    a = hash_block(None, [1, 2])
    assert hash_block(a, [3, 4]) != hash_block(hash_block(None, [9, 9]), [3, 4])
    bm = BlockManager(8, 2)
    bm.allocate(1, [9, 9, 3, 4], 4)
    bm.commit(1, [9, 9, 3, 4], 4)
    assert bm.lookup_prefix([1, 2, 3, 4, 5], 2) == []  # same second block, other parent


def test_freed_cached_blocks_are_revived_until_evicted_lru() -> None:
    bm = BlockManager(4, 2)
    for seq_id, prompt in ((1, [1, 1, 1]), (2, [2, 2, 2])):
        bm.allocate(seq_id, prompt, 3)
        bm.commit(seq_id, prompt, 3)
        bm.free(seq_id)
    assert bm.num_free_blocks == 4
    # Reviving a cached free block counts against the free pool.
    hits = bm.lookup_prefix([1, 1, 5], 1)
    assert len(hits) == 1 and bm.can_allocate(8, hits) and not bm.can_allocate(10, hits)
    # A fresh 3-block allocation uses the two uncached blocks first, then evicts the least
    # recently used cached block (sequence 1's), keeping sequence 2's prefix.
    bm.allocate(3, [7] * 6, 6)
    assert bm.lookup_prefix([1, 1, 5], 1) == []
    assert len(bm.lookup_prefix([2, 2, 5], 1)) == 1


def test_fork_shares_full_blocks_only() -> None:
    bm = BlockManager(8, 4)
    prompt = list(range(10))
    bm.allocate(1, prompt, 10)
    bm.commit(1, prompt, 10)
    bm.fork(1, 2, 2)
    assert bm.block_table(2) == bm.block_table(1)[:2]
    bm.grow(2, 11)  # the child's copy of the partial block is its own
    assert bm.block_table(2)[2] != bm.block_table(1)[2]
    assert bm.ref_count(bm.block_table(1)[0]) == 2 and bm.ref_count(bm.block_table(1)[2]) == 1
    bm.free(1)
    bm.free(2)
    assert bm.num_free_blocks == 8


def test_duplicate_content_keeps_first_block_cached() -> None:
    bm = BlockManager(8, 2)
    for seq_id in (1, 2):  # the same prompt computed twice in one step
        bm.allocate(seq_id, [5, 6, 7], 3)
    bm.commit(1, [5, 6, 7], 3)
    bm.commit(2, [5, 6, 7], 3)
    assert bm.lookup_prefix([5, 6, 9], 1) == bm.block_table(1)[:1]
    bm.free(1)
    bm.free(2)
    assert bm.num_free_blocks == 8


def test_prefix_caching_can_be_disabled() -> None:
    bm = BlockManager(8, 2, enable_prefix_caching=False)
    bm.allocate(1, [1, 2, 3], 3)
    bm.commit(1, [1, 2, 3], 3)
    assert bm.lookup_prefix([1, 2, 3], 1) == []
    assert bm.prefix_cache_hit_rate == 0.0


@pytest.mark.parametrize(("blocks", "size"), [(0, 4), (4, 0)])
def test_bad_sizes_are_rejected(blocks: int, size: int) -> None:
    with pytest.raises(ValueError, match=r"num_kv_blocks|block_size"):
        BlockManager(blocks, size)
