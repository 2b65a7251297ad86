-- Documents, entities and mentions: the relational copy of everything ingested.
CREATE TABLE documents (
    id            TEXT PRIMARY KEY,
    text          TEXT NOT NULL,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    content_hash  TEXT NOT NULL,
    embedding_model TEXT NOT NULL,
    entities_extracted BOOLEAN NOT NULL,
    ingested_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE entities (
    id     TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    label  TEXT NOT NULL
);

CREATE TABLE mentions (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    entity_id   TEXT NOT NULL REFERENCES entities(id),
    start_char  INTEGER NOT NULL,
    end_char    INTEGER NOT NULL,
    score       REAL NOT NULL,
    PRIMARY KEY (document_id, entity_id, start_char)
);

CREATE INDEX mentions_entity ON mentions(entity_id);
