"""`SchedulerStats`, `PrefixCacheStats`, `IterationStats` (the fields the adapter reads)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PrefixCacheStats:
    reset: bool = False
    requests: int = 0
    queries: int = 0
    hits: int = 0


@dataclass
class SchedulerStats:
    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_stats: PrefixCacheStats = field(default_factory=PrefixCacheStats)


class IterationStats:
    def __init__(self) -> None:
        self.num_generation_tokens = 0
        self.num_prompt_tokens = 0
