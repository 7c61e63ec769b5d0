"""The PostgreSQL connection rule: the pools of every gateway process fit the server.

    replicas x workers x Settings.connections_per_process
        <= max_connections - superuser_reserved_connections - HEADROOM

Past it, PostgreSQL refuses connections under load (`too many clients`): requests get 503s
(core.db_outage) that more connections would not have needed. `sluicegate serve` checks its
own share (one replica) at start and warns.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Connections kept free for the CLI, migrations, psql and monitoring.
HEADROOM = 10


@dataclass(frozen=True, slots=True)
class ServerConnections:
    max_connections: int
    superuser_reserved: int

    @property
    def available(self) -> int:
        return self.max_connections - self.superuser_reserved - HEADROOM


async def server_connections(session: AsyncSession) -> ServerConnections:
    """What this PostgreSQL server allows (run on a PostgreSQL session)."""
    most = await session.scalar(text("SHOW max_connections"))
    reserved = await session.scalar(text("SHOW superuser_reserved_connections"))
    return ServerConnections(int(most or 0), int(reserved or 0))


def over_budget(*, per_process: int, workers: int, server: ServerConnections) -> str | None:
    """Why `workers` processes of `per_process` connections do not fit `server`, or None."""
    needed = workers * per_process
    if needed <= server.available:
        return None
    return (
        f"{workers} worker(s) x {per_process} connections = {needed}, but PostgreSQL allows "
        f"{server.max_connections} less {server.superuser_reserved} reserved and {HEADROOM} of "
        f"headroom = {server.available}: lower SLUICEGATE_DATABASE_POOL_SIZE, "
        "SLUICEGATE_DATABASE_MAX_OVERFLOW or SLUICEGATE_LEDGER_POOL_SIZE, or raise max_connections"
    )
