"""The database schema's history (Alembic) and the code that applies it.

- `versions/`: the migrations, in order.
- `env`:       Alembic's environment (async engines; URL from the caller or the settings).
- `runner`:    apply or roll back (the CLI, `make run`, tests and benchmarks call this).
- `tables`:    every table module in one metadata (autogenerate and tests compare against it).
"""
