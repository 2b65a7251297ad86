"""PostgreSQL through asyncpg: documents, entities, mentions, and their migrations.

Migrations are the numbered ``migrations/*.sql`` files, applied once each in
order inside a transaction and recorded in ``schema_migrations``; an advisory
lock keeps two replicas from applying them at the same time.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

from deployments.stores import DocumentRecord, StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 7_401_244  # pg_advisory_lock key: any constant unique to this app


def _unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    where = url.rsplit("@", 1)[-1]  # never log a password
    return StoreUnavailable("postgresql", f"{where}: {type(exc).__name__}: {exc}")


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


async def migrate(conn) -> list[str]:
    """Apply the migrations this database lacks; returns the names applied."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


class PostgresStore:
    def __init__(self, url: str):
        self.url = url
        self.pool = None

    async def connect(self) -> None:
        import asyncpg

        try:
            self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, timeout=5)
            async with self.pool.acquire() as conn:
                await migrate(conn)
        except _connection_errors() as exc:
            raise _unavailable(self.url, exc) from exc

    async def stored_hashes(self, ids: list[str]) -> dict[str, str]:
        """content_hash of the given documents already stored."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, content_hash FROM documents WHERE id = ANY($1::text[])", ids
            )
        return {r["id"]: r["content_hash"] for r in rows}

    @asynccontextmanager
    async def _conn(self):
        if self.pool is None:
            await self.connect()
        try:
            async with self.pool.acquire(timeout=5) as conn:
                yield conn
        except _connection_errors() as exc:
            raise _unavailable(self.url, exc) from exc

    @asynccontextmanager
    async def write(self, docs: list[DocumentRecord], model: str, entities_extracted: bool):
        """Write ``docs`` in one transaction that commits only if the block exits cleanly.

        Ingest does its other stores' writes inside this block, so a failure
        anywhere rolls the relational copy back too.
        """
        async with self._conn() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO documents (id, text, metadata, content_hash, embedding_model, "
                "entities_extracted) VALUES ($1, $2, $3::jsonb, $4, $5, $6) "
                "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                "content_hash = EXCLUDED.content_hash, embedding_model = EXCLUDED.embedding_model, "
                "entities_extracted = EXCLUDED.entities_extracted, ingested_at = now()",
                [(d.id, d.text, json.dumps(d.metadata), d.content_hash, model, entities_extracted)
                 for d in docs],
            )
            await conn.execute(
                "DELETE FROM mentions WHERE document_id = ANY($1::text[])", [d.id for d in docs]
            )
            mentions = [(d.id, m) for d in docs for m in d.mentions]
            await conn.executemany(
                "INSERT INTO entities (id, name, label) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                sorted({(m.entity_id, m.name, m.label) for _, m in mentions}),
            )
            await conn.executemany(
                "INSERT INTO mentions VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [(doc, m.entity_id, m.start, m.end, m.score) for doc, m in mentions],
            )
            yield

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
