"""Request and sequence state shared by the scheduler and the engine (no tensors).

A request (`SequenceGroup`) has `n` sequences, one per completion. Only the first (the
leader) is scheduled at first; the others wait unforked until the leader has computed the
prompt, then share its full prompt blocks and sample their first token from the leader's
prompt logits (see `Scheduler.fork`).

A sequence's progress is one number, `num_computed_tokens`: the tokens `[0, num_computed)` have
keys and values in the cache. Whatever lies beyond is computed next, a chunk at a time; when a
chunk reaches the end of `token_ids` the step samples a new token. Prefill, chunked prefill,
decode and recompute after preemption are all this one rule.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from inference.outputs import FinishReason
from inference.params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    group: SequenceGroup
    index: int  # which of the request's n completions
    token_ids: list[int]  # prompt followed by the generated tokens
    num_prompt_tokens: int
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    status: SequenceStatus = SequenceStatus.WAITING
    awaiting_fork: bool = False  # a sibling that has not yet received the leader's prompt
    finish_reason: FinishReason | None = None

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """Lower is more important: priority first, then arrival, then completion index."""
        return (self.group.priority, self.group.arrival, self.index)


@dataclass(eq=False)
class SequenceGroup:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: int  # a counter, so ordering never depends on clock resolution
    tenant: str | None = None
    priority: int = 0  # lower is served first (vLLM's convention)
    prompt: str | None = None
    seqs: list[Sequence] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        first_seq_id: int,
        arrival: int,
        tenant: str | None = None,
        priority: int = 0,
        prompt: str | None = None,
    ) -> SequenceGroup:
        group = cls(request_id, list(prompt_token_ids), params, arrival, tenant, priority, prompt)
        for index in range(params.n):
            group.seqs.append(
                Sequence(
                    seq_id=first_seq_id + index,
                    group=group,
                    index=index,
                    token_ids=list(prompt_token_ids),
                    num_prompt_tokens=len(prompt_token_ids),
                    awaiting_fork=index > 0,
                )
            )
        return group

    @property
    def leader(self) -> Sequence:
        return self.seqs[0]

    @property
    def unforked(self) -> list[Sequence]:
        return [s for s in self.seqs if s.awaiting_fork and not s.finished]

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)
