"""`sluicegate`, the operator's command line (same database and audit log as the server).

- `main`:    the app: serve, migrate, admin keys, waitlist, accounts, keys, tiers.
- `reports`: `report …` and `prices …` (billing).
- `models`:  `models fetch` / `models list` (real models from the package index).
- `common`:  console, settings, one transaction per command, tables.
"""
