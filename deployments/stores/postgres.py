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


async def _prune_entities(conn, candidates: set[str]) -> None:
    """Delete those of ``candidates`` that no document mentions any more.

    Their rows are locked first (in id order, as ingest's upsert locks them): a concurrent
    ingest that mentions one again has committed before the check sees it, or inserts
    it anew after this transaction.
    """
    if candidates:
        ids = sorted(candidates)
        await conn.execute(
            "SELECT 1 FROM entities WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
        )
        await conn.execute(
            "DELETE FROM entities e WHERE e.id = ANY($1::text[]) "
            "AND NOT EXISTS (SELECT 1 FROM mentions m WHERE m.entity_id = e.id)", ids,
        )


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
            before = await conn.fetch(
                "DELETE FROM mentions WHERE document_id = ANY($1::text[]) RETURNING entity_id",
                [d.id for d in docs],
            )
            mentions = [(d.id, m) for d in docs for m in d.mentions]
            # DO UPDATE (a no-op) rather than DO NOTHING: it locks the row, so a concurrent
            # delete cannot prune an entity these mentions are about to reference.
            await conn.executemany(
                "INSERT INTO entities (id, name, label) VALUES ($1, $2, $3) "
                "ON CONFLICT (id) DO UPDATE SET name = entities.name",
                sorted({(m.entity_id, m.name, m.label) for _, m in mentions}),
            )
            await conn.executemany(
                "INSERT INTO mentions VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [(doc, m.entity_id, m.start, m.end, m.score) for doc, m in mentions],
            )
            await _prune_entities(conn, {r["entity_id"] for r in before})
            yield

    @asynccontextmanager
    async def delete(self, ids: list[str]):
        """Delete ``ids``, their mentions and the entities no document mentions any more, in
        one transaction that commits only if the block exits cleanly (forgetting does its
        other stores' deletes inside it). Yields ``{id: (text, embedding_model)}`` of those
        that were stored."""
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, text, embedding_model FROM documents WHERE id = ANY($1::text[]) "
                "ORDER BY id FOR UPDATE", ids,
            )
            mentioned = await conn.fetch(
                "DELETE FROM mentions WHERE document_id = ANY($1::text[]) RETURNING entity_id", ids
            )
            await conn.execute("DELETE FROM documents WHERE id = ANY($1::text[])", ids)
            await _prune_entities(conn, {r["entity_id"] for r in mentioned})
            yield {r["id"]: (r["text"], r["embedding_model"]) for r in rows}

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
