"""Text generation: our batched, paged-KV torch engine and the vLLM adapter behind one interface.

`from inference import LLM, SamplingParams` is the offline API. `LLM` is imported lazily so
that light users of this package (the gateway's protocol and output types) never load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inference.params import SamplingParams

if TYPE_CHECKING:
    from inference.llm import LLM

__all__ = ["LLM", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "LLM":
        from inference.llm import LLM

        return LLM
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
