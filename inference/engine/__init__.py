"""Our engine, in nano-vllm's shape: schedule -> run -> postprocess, one step at a time.

- `llm_engine`:   `LLMEngine`: requests in, deltas out, one step at a time.
- `scheduler`:    which sequences run next and how many tokens each (no torch).
- `kv_cache`:     the paged KV cache's bookkeeping: blocks, block tables, prefix hashes (no torch).
- `sequence`:     request and sequence state (no torch).
- `model_runner`: one step on the model: build the flat batch, run it, sample.
- `sampler`:      logits -> tokens: small pure functions.
- `completion`:   one completion's output side: finish checks, text, stops, logprobs.
- `async_engine`: `TorchAsyncEngine`: the engine stepping in a thread, deltas to asyncio.
"""
