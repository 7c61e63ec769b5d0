"""Thin routes, one module per resource; everything they need arrives from `api.deps`.

- `completions`, `chat`: the generation routes (also dispatched by `api.fastpath`).
- `models`:             `GET /v1/models[/{id}]`: the models a key may use.
- `waitlist`:           apply, check status and claim the first key (no key needed).
- `keys`:               a developer's own API keys.
- `usage`:              a developer's own usage.
- `admin`:              the operator's API: waitlist decisions, accounts, keys, tiers, audit.
- `key_limits`:         an operator's per-key caps.
- `prices`:             prices per model (audited, never edited).
- `reports`:            usage reports and invoices (JSON or CSV).
- `metrics`:            `GET /metrics` (admin key).
- `health`:             `/healthz` and `/readyz`.
"""
