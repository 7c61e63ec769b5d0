"""The scheduler on plain lists: budgets, chunking, preemption, priorities, tenants, forks."""

from __future__ import annotations

import subprocess
import sys
from itertools import count

import pytest

from inference.engine.kv_cache import BlockManager
from inference.engine.scheduler import Scheduler, SchedulerOutput
from inference.engine.sequence import SequenceGroup, SequenceStatus
from inference.params import SamplingParams

_ids = count()


def group(
    prompt_len: int,
    *,
    max_tokens: int = 4,
    n: int = 1,
    tenant: str | None = None,
    priority: int = 0,
    name: str | None = None,
) -> SequenceGroup:
    arrival = next(_ids)
    return SequenceGroup.create(
        name or f"r{arrival}",
        [arrival % 50 + 1] * prompt_len,
        SamplingParams(max_tokens=max_tokens, n=n, temperature=0.0),
        first_seq_id=arrival * 100,
        arrival=arrival,
        tenant=tenant,
        priority=priority,
    )


def make(blocks: int = 64, block_size: int = 4, seqs: int = 8, tokens: int = 64) -> Scheduler:
    return Scheduler(
        BlockManager(blocks, block_size), max_num_seqs=seqs, max_num_batched_tokens=tokens
    )


def finish_step(scheduler: Scheduler, output: SchedulerOutput) -> None:
    """What the engine does after the model ran: advance, fork, append a token, finish."""
    scheduler.update(output)
    for item in output.scheduled:
        if item.forks:
            scheduler.fork(item.seq, item.forks)
    for item in output.scheduled:
        if not item.samples:
            continue
        for seq in [item.seq, *item.forks]:
            seq.token_ids.append(0)
            if seq.num_output_tokens >= seq.group.params.max_tokens:
                scheduler.finish(seq)


def run_to_end(scheduler: Scheduler, limit: int = 500) -> list[SchedulerOutput]:
    outputs = []
    while scheduler.has_unfinished():
        output = scheduler.schedule()
        assert output.scheduled, "no progress"
        finish_step(scheduler, output)
        outputs.append(output)
        assert len(outputs) < limit
    bm = scheduler.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    return outputs


def test_imports_no_torch() -> None:
    code = (
        "import sys, inference.engine.scheduler, inference.engine.kv_cache;"
        " assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_budget_and_seat_limits_hold_every_step() -> None:
    scheduler = make(seqs=3, tokens=10)
    groups = [group(7) for _ in range(5)]
    for g in groups:
        scheduler.add(g)
    for output in run_to_end(scheduler):
        assert output.num_batched_tokens <= 10
        assert len(output.scheduled) <= 3
    assert all(g.finished for g in groups)


def test_long_prompt_is_chunked_and_decodes_go_first() -> None:
    scheduler = make(tokens=8)
    short = group(3, max_tokens=6)
    scheduler.add(short)
    finish_step(scheduler, scheduler.schedule())  # short's prefill: now decoding
    long = group(30)
    scheduler.add(long)
    chunks = []
    while long.leader.num_computed_tokens < 30:
        output = scheduler.schedule()
        assert output.scheduled[0].seq is short.leader and output.scheduled[0].num_tokens == 1
        chunk = next(i for i in output.scheduled if i.seq is long.leader)
        assert not chunk.samples or chunk.start + chunk.num_tokens == 30
        chunks.append(chunk.num_tokens)
        finish_step(scheduler, output)
    assert chunks == [7, 7, 7, 7, 2]
    run_to_end(scheduler)


def test_preemption_frees_blocks_and_requeues_the_newest_at_the_front() -> None:
    scheduler = make(blocks=6, block_size=4, tokens=64)
    old, new = group(8, max_tokens=12), group(8, max_tokens=12)
    scheduler.add(old)
    scheduler.add(new)
    preempted = []
    for output in run_to_end(scheduler):
        preempted += output.preempted
    assert preempted and all(seq is new.leader for seq in preempted)
    assert scheduler.num_preemptions == len(preempted)
    assert old.finished and new.finished


def test_preempted_sequence_recomputes_all_its_tokens() -> None:
    scheduler = make(blocks=5, block_size=4)
    a, b = group(8, max_tokens=8), group(8, max_tokens=8)
    scheduler.add(a)
    scheduler.add(b)
    while not (output := scheduler.schedule()).preempted:
        finish_step(scheduler, output)
    victim = output.preempted[0]
    assert victim.status is SequenceStatus.WAITING and victim.num_computed_tokens == 0
    assert scheduler.block_manager.block_table(victim.seq_id) == []
    finish_step(scheduler, output)
    run_to_end(scheduler)
    assert victim.num_output_tokens == 8


def test_waiting_order_priority_then_round_robin_tenants() -> None:
    scheduler = make(seqs=1, tokens=64)
    burst = [group(2, max_tokens=1, tenant="a", name=f"a{i}") for i in range(3)]
    others = [group(2, max_tokens=1, tenant="b", name=f"b{i}") for i in range(2)]
    urgent = group(2, max_tokens=1, tenant="a", priority=-1, name="urgent")
    for g in [*burst, *others, urgent]:
        scheduler.add(g)
    order = [o.scheduled[0].seq.group.request_id for o in run_to_end(scheduler)]
    assert order == ["urgent", "a0", "b0", "a1", "b1", "a2"]


def test_finished_sequences_free_their_blocks_at_once() -> None:
    scheduler = make()
    g = group(9, max_tokens=1)
    scheduler.add(g)
    finish_step(scheduler, scheduler.schedule())
    assert g.finished and scheduler.block_manager.num_used_blocks == 0


def test_abort_of_waiting_and_running_requests() -> None:
    scheduler = make(seqs=1)
    running, waiting = group(5), group(5)
    scheduler.add(running)
    scheduler.add(waiting)
    finish_step(scheduler, scheduler.schedule())
    scheduler.abort(waiting)
    scheduler.abort(running)
    assert not scheduler.has_unfinished()
    assert scheduler.block_manager.num_used_blocks == 0


@pytest.mark.parametrize("prompt_len", [8, 10])
def test_n_siblings_fork_from_the_computed_prompt(prompt_len: int) -> None:
    scheduler = make(block_size=4, seqs=3)
    g = group(prompt_len, n=3, max_tokens=3)
    scheduler.add(g)
    output = scheduler.schedule()
    assert [item.seq for item in output.scheduled] == [g.leader]
    assert output.scheduled[0].forks == g.seqs[1:]
    finish_step(scheduler, output)
    bm = scheduler.block_manager
    leader_blocks = bm.block_table(g.leader.seq_id)
    for sib in g.seqs[1:]:
        assert bm.block_table(sib.seq_id) == leader_blocks[: prompt_len // 4]
        assert sib.num_computed_tokens == prompt_len // 4 * 4
        assert sib.num_output_tokens == 1  # sampled from the leader's row
    assert all(bm.ref_count(b) == 3 for b in leader_blocks[: prompt_len // 4])
    run_to_end(scheduler)
    assert all(s.num_output_tokens == 3 for s in g.seqs)


def test_n_reserves_seats_for_the_siblings() -> None:
    scheduler = make(seqs=3)
    scheduler.add(group(4, n=3))
    other = group(4)
    scheduler.add(other)
    output = scheduler.schedule()
    assert [i.seq.group for i in output.scheduled] != [other]
    assert other.leader.status is SequenceStatus.WAITING
    with pytest.raises(ValueError, match=r"^n "):
        scheduler.add(group(4, n=4))
