"""`EngineArgs` / `AsyncEngineArgs` with the field names of vLLM 0.33 (a subset)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

FAKE_KV_BLOCKS = 512


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    served_model_name: str | list[str] | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    distributed_executor_backend: str | None = None
    pipeline_parallel_size: int = 1
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    disable_log_stats: bool = False
    scheduling_policy: str = "fcfs"

    def create_engine_config(self, usage_context: Any = None) -> Any:
        """A stand-in `VllmConfig` holding the sub-configs the adapter reads."""
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        return SimpleNamespace(
            model_config=SimpleNamespace(
                model=self.model, max_model_len=self.max_model_len or 1024
            ),
            # vLLM sums the blocks of all data-parallel engines into one number.
            cache_config=SimpleNamespace(num_gpu_blocks=FAKE_KV_BLOCKS * self.data_parallel_size),
            parallel_config=SimpleNamespace(
                tensor_parallel_size=self.tensor_parallel_size,
                pipeline_parallel_size=self.pipeline_parallel_size,
                data_parallel_size=self.data_parallel_size,
                distributed_executor_backend=self.distributed_executor_backend,
            ),
            scheduler_config=SimpleNamespace(
                max_num_seqs=self.max_num_seqs or 256, policy=self.scheduling_policy
            ),
        )


@dataclass
class AsyncEngineArgs(EngineArgs):
    enable_log_requests: bool = False
