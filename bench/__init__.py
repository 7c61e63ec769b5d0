"""Benchmarks: each prints a table and writes JSON under `bench/results/`.

- `engine`:          our engine against its peers on one workload.
- `gateway`:         the gateway's cost per request against a mock and a bare pass-through.
- `gateway_servers`: the mock upstream and the pass-through that `gateway` measures.
- `ledger`:          the ledger's write path alone (group commit on PostgreSQL).
- `reports`:         billing reports on a large ledger.
"""
