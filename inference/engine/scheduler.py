"""Which sequences run in the next step, and how many of their tokens (no tensors).

Every step spends a token budget (`max_num_batched_tokens`) over at most `max_num_seqs`
sequences: running sequences first, decodes before prefill chunks, so a long prompt never
stalls anyone's decoding; whatever budget is left admits waiting sequences, a prompt chunk at
a time (chunked prefill). When the KV pool runs out, the least important running sequence is
preempted by recompute: its blocks are freed and it goes back to the front of the waiting
queue (its full blocks usually survive in the prefix cache, so recompute is cheap). Waiting
sequences are served by priority (lower first), then round-robin across tenants, then FIFO.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from inference.engine.kv_cache import BlockManager
from inference.engine.sequence import Sequence, SequenceGroup, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    start: int  # first position computed this step (the sequence's num_computed_tokens)
    num_tokens: int
    samples: bool  # the chunk reaches the end of the sequence's tokens: sample the next one
    forks: list[Sequence] = field(default_factory=list)  # siblings sampling from this row too


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq]
    preempted: list[Sequence]

    @property
    def num_batched_tokens(self) -> int:
        return sum(item.num_tokens for item in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class WaitingQueue:
    """Priority levels (lower first); inside a level tenants take turns; FIFO per tenant."""

    def __init__(self) -> None:
        self._levels: dict[int, OrderedDict[str | None, deque[Sequence]]] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Sequence]:
        for priority in sorted(self._levels):
            for queue in self._levels[priority].values():
                yield from queue

    def push(self, seq: Sequence, *, front: bool = False) -> None:
        level = self._levels.setdefault(seq.group.priority, OrderedDict())
        queue = level.setdefault(seq.group.tenant, deque())
        if front:  # a preempted sequence resumes before anyone else of its level
            queue.appendleft(seq)
            level.move_to_end(seq.group.tenant, last=False)
        else:
            queue.append(seq)
        self._len += 1

    def peek(self) -> Sequence | None:
        if not self._levels:
            return None
        level = self._levels[min(self._levels)]
        return next(iter(level.values()))[0]

    def pop(self) -> Sequence:
        priority = min(self._levels)
        level = self._levels[priority]
        tenant, queue = next(iter(level.items()))
        seq = queue.popleft()
        if queue:
            level.move_to_end(tenant)  # the tenant's next request waits for the others' turns
        else:
            del level[tenant]
        if not level:
            del self._levels[priority]
        self._len -= 1
        return seq

    def remove(self, seq: Sequence) -> None:
        level = self._levels.get(seq.group.priority)
        queue = level.get(seq.group.tenant) if level is not None else None
        if level is None or queue is None or seq not in queue:
            return
        queue.remove(seq)
        self._len -= 1
        if not queue:
            del level[seq.group.tenant]
        if not level:
            del self._levels[seq.group.priority]


class Scheduler:
    def __init__(
        self, block_manager: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int
    ):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting = WaitingQueue()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # -- requests --------------------------------------------------------------------------

    def add(self, group: SequenceGroup) -> None:
        if group.params.n > self.max_num_seqs:
            raise ValueError(f"n must be at most max_num_seqs ({self.max_num_seqs})")
        self.waiting.push(group.leader)

    def abort(self, group: SequenceGroup) -> None:
        for seq in group.seqs:
            if seq.status is SequenceStatus.WAITING:
                self.waiting.remove(seq)
            self.finish(seq)

    def finish(self, seq: Sequence) -> None:
        """Mark the sequence finished and free its blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        seq.status = SequenceStatus.FINISHED
        self.block_manager.free(seq.seq_id)

    def has_unfinished(self) -> bool:
        return bool(self.running) or len(self.waiting) > 0

    # -- one step --------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        step = _Step(budget=self.max_num_batched_tokens)
        # Decodes (one uncomputed token) first, then unfinished prefill chunks.
        for seq in sorted(self.running, key=lambda s: s.num_uncomputed_tokens > 1):
            if step.budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_tokens = min(seq.num_uncomputed_tokens, step.budget)
            if self._make_room(seq, seq.num_computed_tokens + num_tokens, step):
                self.block_manager.grow(seq.seq_id, seq.num_computed_tokens + num_tokens)
                step.add(seq, num_tokens)
        if not step.preempted:  # admitting now would only preempt again
            self._admit(step)
        return SchedulerOutput(list(step.scheduled.values()), step.preempted)

    def update(self, output: SchedulerOutput) -> None:
        """After the model ran: advance progress and publish newly full blocks to the cache."""
        for item in output.scheduled:
            seq = item.seq
            seq.num_computed_tokens += item.num_tokens
            self.block_manager.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens)

    def fork(self, leader: Sequence, siblings: list[Sequence]) -> None:
        """Start the siblings from the leader's computed prompt.

        They share its full prompt blocks; the prompt's last partial block (if any) is
        recomputed privately by each sibling, so shared blocks are never written.
        """
        full_blocks = leader.num_prompt_tokens // self.block_manager.block_size
        for sib in siblings:
            self.block_manager.fork(leader.seq_id, sib.seq_id, full_blocks)
            sib.num_computed_tokens = full_blocks * self.block_manager.block_size
            sib.num_cached_tokens = leader.num_cached_tokens
            sib.awaiting_fork = False
            sib.status = SequenceStatus.RUNNING
            self.running.append(sib)

    # -- helpers ---------------------------------------------------------------------------

    def _slots_used(self) -> int:
        return sum(1 + len(s.group.unforked) if s.index == 0 else 1 for s in self.running)

    def _make_room(self, seq: Sequence, num_tokens: int, step: _Step) -> bool:
        """Preempt the least important running sequences until `seq` fits; False if it was one."""
        while not self.block_manager.can_grow(seq.seq_id, num_tokens):
            victim = max(self.running, key=lambda s: s.sort_key)
            self._preempt(victim, step)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, step: _Step) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq.seq_id)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.push(seq, front=True)
        step.unschedule(seq)
        step.preempted.append(seq)
        self.num_preemptions += 1

    def _admit(self, step: _Step) -> None:
        bm = self.block_manager
        slots = self._slots_used()
        while step.budget > 0 and (seq := self.waiting.peek()) is not None:
            need_slots = 1 + (len(seq.group.unforked) if seq.index == 0 else 0)
            if slots + need_slots > self.max_num_seqs:
                break
            cached: list[int] = []
            if seq.group.params.prompt_logprobs is None:  # those need every prompt position
                # At least one token must be computed to get logits to sample from.
                cached = bm.lookup_prefix(seq.token_ids, (len(seq.token_ids) - 1) // bm.block_size)
            num_cached = len(cached) * bm.block_size
            num_tokens = min(len(seq.token_ids) - num_cached, step.budget)
            if not bm.can_allocate(num_cached + num_tokens, cached):
                break
            self.waiting.pop()
            bm.allocate(seq.seq_id, seq.token_ids, num_cached + num_tokens, cached)
            seq.num_computed_tokens = num_cached
            if seq.num_output_tokens == 0:
                seq.num_cached_tokens = num_cached
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            slots += need_slots
            step.add(seq, num_tokens)


@dataclass
class _Step:
    """The step being built: what is scheduled so far and the budget left."""

    budget: int
    scheduled: dict[int, ScheduledSeq] = field(default_factory=dict)
    preempted: list[Sequence] = field(default_factory=list)

    def add(self, seq: Sequence, num_tokens: int) -> None:
        start = seq.num_computed_tokens
        samples = start + num_tokens == len(seq.token_ids)
        forks = seq.group.unforked if samples and seq.index == 0 else []
        self.scheduled[seq.seq_id] = ScheduledSeq(seq, start, num_tokens, samples, forks)
        self.budget -= num_tokens

    def unschedule(self, seq: Sequence) -> None:
        item = self.scheduled.pop(seq.seq_id, None)
        if item is not None:
            self.budget += item.num_tokens
