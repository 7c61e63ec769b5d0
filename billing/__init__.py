"""Usage metering and billing (no HTTP here; `api/` composes it).

- `models`:   ledger (one row per request), prices, usage_daily rollups, gateway instances.
- `prices`:   price history and THE cost formula: per request, integer micro-dollars,
              (prompt x prompt_per_1k + completion x completion_per_1k + 500) // 1000.
- `ledger`:   the two writes per request (start before generation, finish before the last
              byte) and the rollup upsert, idempotent on the request id.
- `stores`:   where batches of those writes go (asyncpg fast path on PostgreSQL).
- `ledger_sql`: the fast path's one statement per batch (starts, checkpoints, finishes).
- `writer`:   group commit: concurrent requests' writes of every kind share one
              transaction per batch; a bad row fails alone.
- `redelivery`: finishes that failed in a database outage, retried until they land.
- `metering`: `LedgerMeter`, the gateway pipeline's metering hook.
- `sweeper`:  settles rows of dead gateway processes as `interrupted` (heartbeats).
- `activity`: recent outcomes (error rate) and when each key was last used, from the ledger.
- `reports`:  usage reports and invoices from the rollups (and, for reconciliation, from
              the ledger); `export` renders them as CSV/JSON.
"""
