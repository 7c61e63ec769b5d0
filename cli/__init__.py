"""`sluicegate`, the operator's command line (same database and audit log as the server).

- `main`:    the app: serve, migrate, admin keys, waitlist, accounts, keys, tiers.
- `reports`: `report …` and `prices …` (billing).
- `common`:  console, settings, one transaction per command, tables.
"""
