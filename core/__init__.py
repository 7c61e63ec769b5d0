"""The ground floor every other package may use; it imports none of them.

- `config`: typed settings from the environment (`Settings`, `get_settings`).
- `db`:     the SQLAlchemy base, URL normalisation, async engine and session factories.
- `db_budget`: the rule that every gateway process's pools fit PostgreSQL's max_connections.
- `db_outage`: which database errors mean "cannot take work now" (a 503, retry later).
- `errors`: typed domain errors (no status codes; `api/errors.py` maps them).
- `logs`:   the server's log format (uvicorn's plain text, or one JSON object a line).
- `linger`: the rule by which a group commit's round trip waits for company under load.
- `inputs`: the rules every client input meets (text, instants, integers, column lengths).
- `redis`:  the app's Redis client and connections that pack commands in C.
"""
