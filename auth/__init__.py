"""Access: who may call, with which key, under which limits (no HTTP here; `api/` composes it).

- `models`:        tables: tiers, waitlist, accounts, API keys, admin keys, audit log,
                   console sessions.
- `tokens`:        secrets: generation, hashing, display prefixes.
- `waitlist`:      apply, check status, approve or reject, claim the first key.
- `accounts`:      developer accounts: suspend, reinstate, change tier.
- `keys`:          developer API keys: create, list, revoke, resolve to a `Principal`.
- `key_limits`:    an operator's per-key caps inside the account's tier.
- `authenticator`: the hot-path key check with a short cache and cross-process revocation.
- `admin`:         operator (admin) credentials.
- `console_sessions`: web console sessions kept on the server (start, find, end, purge).
- `tiers`:         named bundles of rate limits and monthly quota.
- `audit`:         who did what to which object, and when.
- `operations`:    audited actions that change access (shared by the admin API and the CLI).
- `ratelimit/`:    rate limits and quotas across every replica (memory or Redis store).
"""
