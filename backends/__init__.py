"""Where a model's tokens come from: in-process engines and remote servers, behind one router.

- `base`:    the backend contract: `BackendRequest` in, `GenerationDelta`s and `FinalUsage` out.
- `local`:   `LocalBackend` over an in-process engine (`inference/`); `open_engine`.
- `remote`:  `RemoteBackend`: an OpenAI-compatible server over HTTP + SSE (aiohttp).
- `router`:  `BackendRouter`: least loaded, prefix affinity, health checks, failover.
- `catalog`: the models a deployment serves and their backends (YAML, or the built-in default).
"""
