-- The job queue's SQLite schema (see jobs.md). The gateway and the workers both apply it at
-- start; every statement is idempotent. Times are Unix milliseconds.
PRAGMA journal_mode = WAL;

CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('rag.query', 'ingest', 'sandbox.run')),
    input            TEXT NOT NULL,
    webhook_url      TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    available_at     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    result           TEXT,
    error            TEXT,
    request_id       TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The claim's two cases: queued and available, or running with an expired lease.
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (available_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_expires_at) WHERE status = 'running';
-- Retention (the gateway's reaper): finished jobs and idempotency keys, oldest first.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (updated_at) WHERE status IN ('succeeded', 'failed');
CREATE INDEX IF NOT EXISTS jobs_idempotency_age ON jobs (created_at) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               TEXT PRIMARY KEY,          -- msg_ + the job id's suffix: the webhook-id
    job_id           TEXT NOT NULL UNIQUE REFERENCES jobs (id),
    url              TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         TEXT NOT NULL DEFAULT '[]', -- JSON list of {at, status_code, error, duration_ms}
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
