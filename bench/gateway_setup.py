"""The gateway under `bench/gateway.py`: its config, database, developer key and switches."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

# key -> (row name, rate limits on, metering on)
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "auth": ("(b) gateway: auth", False, False),
    "limits": ("(b) gateway: auth+limits", True, False),
    "metering": ("(b) gateway: auth+metering", False, True),
    "full": ("(b) gateway: full stack", True, True),
}


@dataclass
class GatewaySetup:
    """One database and developer key, shared by every gateway variant of a run."""

    directory: Path
    mock_url: str
    admin_key: str = field(default_factory=lambda: "sk-admin-" + secrets.token_urlsafe(32))
    key: str | None = None
    database_url: str | None = None  # None: a SQLite file in `directory`

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.directory / 'bench.db'}"

    def env(self, *, limits: bool, metering: bool, redis_url: str | None) -> dict[str, str]:
        return {
            "DATABASE_URL": self.db_url,
            "SLUICEGATE_CONFIG": str(self.directory / "models.yaml"),
            "SLUICEGATE_ADMIN_KEY": self.admin_key,
            "SLUICEGATE_ENVIRONMENT": "development",
            "SLUICEGATE_VAR_DIR": str(self.directory / "var"),
            "SLUICEGATE_METERING_ENABLED": str(metering).lower(),
            "SLUICEGATE_LIMITS_ENABLED": str(limits).lower(),
            "SLUICEGATE_WAITLIST_PER_IP_PER_MINUTE": "0",
            "SLUICEGATE_LOG_LEVEL": "warning",
            "REDIS_URL": redis_url or "",
        }

    def write_config(self) -> None:
        from inference.checkpoints.hub import resolve_model_dir
        from migrations.runner import upgrade

        backend = {"type": "remote", "base_url": self.mock_url, "max_outstanding": 4096}
        model = {
            "id": "tiny",
            "tokenizer": str(resolve_model_dir("tiny").resolve()),
            "backends": [backend],
        }
        config = {"router": {"health_interval_s": 5}, "models": [model]}
        (self.directory / "models.yaml").write_text(yaml.safe_dump(config))
        upgrade(self.db_url)

    def onboard(self, url: str) -> str:
        """A developer on an effectively unlimited tier (limits then cost, never refuse)."""
        if self.key is not None:
            return self.key
        admin = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=url, timeout=60) as http:
            huge = 10**12
            # requests_per_minute is a 32-bit column: PostgreSQL refuses 10**12 there.
            tier = {"name": "bench", "requests_per_minute": 2**31 - 1, "tokens_per_minute": huge,
                    "max_concurrent_requests": 100_000, "tokens_per_month": huge}  # fmt: skip
            http.post("/admin/tiers", json=tier, headers=admin).raise_for_status()
            applied = http.post(
                "/v1/waitlist",
                json={"email": "bench@example.com", "name": "Bench", "use_case": "Benchmarks."},
            )
            applied.raise_for_status()
            app_id, claim = applied.json()["id"], applied.json()["claim_token"]
            http.post(
                f"/admin/waitlist/{app_id}/approve", json={"tier": "bench"}, headers=admin
            ).raise_for_status()
            claimed = http.post(
                f"/v1/waitlist/{app_id}/claim", headers={"Authorization": f"Bearer {claim}"}
            )
            claimed.raise_for_status()
        self.key = str(claimed.json()["key"])
        return self.key
