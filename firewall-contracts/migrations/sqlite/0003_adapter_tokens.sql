-- The grant server's credentials (issue 15), SQLite dialect; postgres/0003_adapter_tokens.sql
-- is the same in PostgreSQL's. Each adapter fetches its own grant with a bearer token that
-- `smf-firewall license token` makes: 32 random bytes, of which only the SHA-256 is kept
-- here (hex). One token per adapter: issuing a new one replaces the old.
CREATE TABLE adapter_tokens (
    serial TEXT PRIMARY KEY REFERENCES adapters (serial),
    token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
    -- RFC 3339, UTC.
    issued_at TEXT NOT NULL
);
