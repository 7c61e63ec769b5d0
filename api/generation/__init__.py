"""The generation pipeline: an OpenAI request in, tokens out, admitted and metered once.

- `service`:        `GenerationService`: resolve the model, plan, admit, run the job.
- `openai_schemas`: OpenAI wire schemas (requests validated, responses as TypedDicts).
- `planning`:       a validated request -> prompt tokens, sampling parameters, renderer.
- `prompts`:        a conversation -> token ids, with system prompts' tokens cached.
- `hooks`:          the seams where admission (limits) and metering (ledger) join a request.
- `job`:            one admitted request: run, stream or collect, count, settle once.
- `openai_render`:  engine output -> OpenAI bodies, stream chunks and logprobs.
- `streaming`:      client-disconnect handling and the SSE response.
- `usage_reports`:  the inference server's meter: recent requests' final counts, on request.
"""
