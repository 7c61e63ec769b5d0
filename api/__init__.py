"""The HTTP faces and the composition root: the gateway app and the inference server.

- `app`:              the gateway's FastAPI factory; state is built in its lifespan.
- `services`:         everything the app holds for its lifetime (database, Redis, limiter, …).
- `deps`:             typed dependencies (`SessionDep`, `AdminDep`, …) every route takes.
- `routes/`:          thin routes, one module per resource.
- `generation/`:      the pipeline behind /v1/completions and /v1/chat/completions.
- `console/`:         the web console (developer portal, admin console) mounted at /console.
- `fastpath`:         the two generation routes dispatched without FastAPI's per-request work.
- `admission`:        rate limits in the request path (limiter from settings, headers hook).
- `metering_setup`:   the ledger writer, meter and sweeper opened for the app's lifespan.
- `middleware`:       request id, processing time, body size limit, NUL in URLs (pure ASGI).
- `http_server`:      what uvicorn answers and logs itself: JSON 400s, no query strings logged,
                      slow clients closed, connections capped.
- `read_deadlines`:   the timer that closes a connection whose request does not arrive in time.
- `request_log`:      one structured line per request (`SLUICEGATE_LOG_FORMAT=json`).
- `errors`:           the one table from typed errors to OpenAI-shaped responses.
- `metrics`:          Prometheus metrics of one process.
- `schemas`:          request/response schemas of the access API (waitlist, keys, admin).
- `inference_server`: `python -m api.inference_server`: one engine over OpenAI-compatible HTTP.
"""
