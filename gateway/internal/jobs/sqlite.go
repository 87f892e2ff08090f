package jobs

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go)
)

// schema is api/jobs.sql, kept byte for byte (a test compares them).
//
//go:embed schema.sql
var schema string

// SQLite is the embedded backend: one database file shared with the workers
// on the same machine. Writes go through a single connection, so the
// gateway's own writers queue in Go rather than in SQLite's busy handler;
// reads use a separate pool and, thanks to WAL, never wait for writers.
type SQLite struct {
	write *sql.DB
	read  *sql.DB
	now   func() time.Time
}

// OpenSQLite opens (creating it and its directory if needed) the queue
// database at path and applies the schema. now is the clock (nil: time.Now).
func OpenSQLite(ctx context.Context, path string, now func() time.Time) (*SQLite, error) {
	if now == nil {
		now = time.Now
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("jobs database directory: %w", err)
		}
	}
	pragmas := "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + pragmas
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	// One writer connection: transactions are BEGIN IMMEDIATE, so they
	// take the write lock up front and never fail upgrading a read lock.
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	if _, err := write.ExecContext(ctx, schema); err != nil {
		write.Close()
		return nil, fmt.Errorf("jobs database %s: applying the schema: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(8)
	return &SQLite{write: write, read: read, now: now}, nil
}

// Close implements Store.
func (s *SQLite) Close() error {
	return errors.Join(s.read.Close(), s.write.Close())
}

const jobColumns = `id, owner, type, input, webhook_url, idempotency_key, request_hash, status, attempts,
	max_attempts, available_at, lease_owner, lease_token, lease_expires_at, result, error, request_id,
	created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanJob(row scanner) (Job, error) {
	var j Job
	var input string
	var webhook, idem, leaseOwner, leaseToken, result, jobErr sql.NullString
	var leaseExp sql.NullInt64
	err := row.Scan(&j.ID, &j.Owner, &j.Type, &input, &webhook, &idem, &j.RequestHash, &j.Status, &j.Attempts,
		&j.MaxAttempts, &j.AvailableAt, &leaseOwner, &leaseToken, &leaseExp, &result, &jobErr, &j.RequestID,
		&j.CreatedAt, &j.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, err
	}
	j.Input = []byte(input)
	j.WebhookURL, j.IdempotencyKey = webhook.String, idem.String
	j.LeaseOwner, j.LeaseToken, j.LeaseExpiresAt = leaseOwner.String, leaseToken.String, leaseExp.Int64
	if result.Valid {
		j.Result = []byte(result.String)
	}
	if jobErr.Valid {
		j.Error = []byte(jobErr.String)
	}
	return j, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullJSON(b []byte) sql.NullString { return sql.NullString{String: string(b), Valid: b != nil} }

// Enqueue implements Store.
func (s *SQLite) Enqueue(ctx context.Context, n NewJob) (Job, bool, error) {
	now := ms(s.now())
	j := Job{ID: NewID(), Owner: n.Owner, Type: n.Type, Input: n.Input, WebhookURL: n.WebhookURL,
		IdempotencyKey: n.IdempotencyKey, RequestHash: RequestHash(n.Type, n.WebhookURL, n.Input),
		Status: StatusQueued, MaxAttempts: n.MaxAttempts, AvailableAt: now, RequestID: n.RequestID,
		CreatedAt: now, UpdatedAt: now}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return Job{}, false, err
	}
	defer tx.Rollback()
	if j.IdempotencyKey != "" {
		existing, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs
			WHERE owner = ? AND idempotency_key = ?`, j.Owner, j.IdempotencyKey))
		switch {
		case err == nil && existing.RequestHash == j.RequestHash:
			return existing, true, nil
		case err == nil:
			return Job{}, false, ErrIdempotencyMismatch
		case !errors.Is(err, ErrNotFound):
			return Job{}, false, err
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO jobs (id, owner, type, input, webhook_url, idempotency_key,
		request_hash, status, attempts, max_attempts, available_at, request_id, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)`,
		j.ID, j.Owner, j.Type, string(j.Input), nullString(j.WebhookURL), nullString(j.IdempotencyKey),
		j.RequestHash, j.MaxAttempts, j.AvailableAt, j.RequestID, j.CreatedAt, j.UpdatedAt)
	if err != nil {
		return Job{}, false, fmt.Errorf("enqueue: %w", err)
	}
	return j, false, tx.Commit()
}

// Get implements Store.
func (s *SQLite) Get(ctx context.Context, owner, id string) (Job, error) {
	j, err := scanJob(s.read.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ? AND owner = ?`, id, owner))
	if err != nil || j.WebhookURL == "" {
		return j, err
	}
	d, err := scanDelivery(s.read.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries WHERE job_id = ?`, id))
	switch {
	case err == nil:
		j.Webhook = &d
	case !errors.Is(err, ErrNotFound):
		return Job{}, err
	}
	return j, nil
}
