"""Text generation: our batched, paged-KV torch engine and the vLLM adapter behind one interface.

No HTTP here: the inference server (`api/inference_server.py`) and the backends that call
engines (`backends/`) sit above this package.

- `protocol`:     `InferenceEngine`, the one small async interface both engines implement.
- `params`:       sampling parameters, validated on construction.
- `outputs`:      what engines return: deltas (online) and finished outputs (offline).
- `engine/`:      our engine: scheduler, paged KV cache, model runner, sampler, async engine.
- `models/`:      model code (GPT-2, Llama family) and the C decode-attention kernel.
- `text/`:        tokenizer, incremental detokenizer, stop strings.
- `checkpoints/`: finding a checkpoint (Hugging Face directory, GGUF file, packaged model)
                  and loading its weights, config and tokenizer.
- `tiny/`:        the built-in tiny model and its corpus.
- `vllm_engine`:  the same interface over vLLM's `AsyncLLM`: the multi-GPU path.
- `vllm_outputs`: vLLM's outputs and stats turned into ours (deltas, `EngineStats`).
- `llm`:          the offline API: `LLM(model).generate(prompts, params)`.

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
