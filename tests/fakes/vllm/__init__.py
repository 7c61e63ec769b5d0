"""A fake of the parts of vLLM 0.33 that Sluicegate uses (same module paths and names)."""

from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
from vllm.inputs import TokensPrompt
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams

__version__ = "0.33.0+fake"
__all__ = [
    "AsyncEngineArgs",
    "CompletionOutput",
    "EngineArgs",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
    "TokensPrompt",
]
