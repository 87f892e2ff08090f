package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

const deliveryColumns = `id, job_id, url, status, attempts, next_attempt_at, lease_expires_at, created_at, updated_at`

func scanDelivery(row scanner) (Delivery, error) {
	var d Delivery
	var attempts string
	var leaseExp sql.NullInt64
	err := row.Scan(&d.ID, &d.JobID, &d.URL, &d.Status, &attempts, &d.NextAttemptAt, &leaseExp, &d.CreatedAt, &d.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Delivery{}, ErrNotFound
	}
	if err != nil {
		return Delivery{}, err
	}
	d.LeaseExpiresAt = leaseExp.Int64
	if err := json.Unmarshal([]byte(attempts), &d.Attempts); err != nil {
		return Delivery{}, fmt.Errorf("delivery %s: attempts: %w", d.ID, err)
	}
	return d, nil
}

// CompleteMany implements Store, in one transaction: one commit however
// many outcomes a worker reports at once.
func (s *SQLite) CompleteMany(ctx context.Context, items []Completion) ([]Completed, error) {
	now := ms(s.now())
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	results := make([]Completed, len(items))
	for i, item := range items {
		if results[i], err = completeTx(ctx, tx, item, now); err != nil {
			return nil, err
		}
	}
	return results, tx.Commit()
}

// completeTx applies one callback within tx.
func completeTx(ctx context.Context, tx *sql.Tx, c Completion, now int64) (Completed, error) {
	j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, c.ID))
	if errors.Is(err, ErrNotFound) {
		return Completed{Err: err}, nil
	}
	if err != nil {
		return Completed{}, err
	}
	j, applied, err := decide(j, c.Outcome, now, retryJitter())
	if err != nil || !applied {
		return Completed{Job: j, Err: err}, nil
	}
	_, err = tx.ExecContext(ctx, `UPDATE jobs SET status = ?, available_at = ?, lease_owner = NULL,
		lease_expires_at = NULL, result = ?, error = ?, updated_at = ? WHERE id = ?`,
		j.Status, j.AvailableAt, nullJSON(j.Result), nullJSON(j.Error), j.UpdatedAt, j.ID)
	if err != nil {
		return Completed{}, fmt.Errorf("complete %s: %w", c.ID, err)
	}
	if err := insertDelivery(ctx, tx, j, now); err != nil {
		return Completed{}, err
	}
	return Completed{Job: j, Applied: true}, nil
}

// insertDelivery creates the delivery of a job that just finished, in the
// same transaction as the transition.
func insertDelivery(ctx context.Context, tx *sql.Tx, j Job, now int64) error {
	if !j.Terminal() || j.WebhookURL == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, job_id, url, status, attempts,
		next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', '[]', ?, ?, ?)
		ON CONFLICT DO NOTHING`, DeliveryID(j.ID), j.ID, j.WebhookURL, now, now, now)
	if err != nil {
		return fmt.Errorf("delivery of %s: %w", j.ID, err)
	}
	return nil
}

// Reap implements Store. Delayed retries need no work here: a queued job
// is claimable once its available_at has passed.
func (s *SQLite) Reap(ctx context.Context, now time.Time) ([]Job, error) {
	n := ms(now)
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `UPDATE jobs SET status = 'failed', error = ?, lease_owner = NULL,
		lease_expires_at = NULL, updated_at = ?
		WHERE status = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts
		RETURNING `+jobColumns, string(exhaustedError), n, n)
	if err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	var failed []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		failed = append(failed, j)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	for _, j := range failed {
		if err := insertDelivery(ctx, tx, j, n); err != nil {
			return nil, err
		}
	}
	return failed, tx.Commit()
}

// ClaimDelivery implements Store.
func (s *SQLite) ClaimDelivery(ctx context.Context, now time.Time) (ClaimedDelivery, bool, error) {
	n := ms(now)
	d, err := scanDelivery(s.write.QueryRowContext(ctx, `UPDATE webhook_deliveries
		SET lease_expires_at = ?, updated_at = ?
		WHERE id = (SELECT id FROM webhook_deliveries
		             WHERE status = 'pending' AND next_attempt_at <= ?
		               AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
		             ORDER BY next_attempt_at LIMIT 1)
		RETURNING `+deliveryColumns, n+DeliveryLease.Milliseconds(), n, n, n))
	if errors.Is(err, ErrNotFound) {
		return ClaimedDelivery{}, false, nil
	}
	if err != nil {
		return ClaimedDelivery{}, false, fmt.Errorf("claim delivery: %w", err)
	}
	j, err := scanJob(s.write.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, d.JobID))
	if err != nil {
		return ClaimedDelivery{}, false, fmt.Errorf("claim delivery %s: job: %w", d.ID, err)
	}
	return ClaimedDelivery{Delivery: d, Job: j}, true, nil
}

// RecordDeliveryAttempt implements Store.
func (s *SQLite) RecordDeliveryAttempt(ctx context.Context, id string, a Attempt, status string, next time.Time) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	nextMS := ms(next)
	if status != DeliveryPending {
		nextMS = a.At
	}
	_, err = s.write.ExecContext(ctx, `UPDATE webhook_deliveries
		SET attempts = json_insert(attempts, '$[#]', json(?)), status = ?, next_attempt_at = ?,
		    lease_expires_at = NULL, updated_at = ?
		WHERE id = ? AND status = 'pending'`, string(raw), status, nextMS, ms(s.now()), id)
	if err != nil {
		return fmt.Errorf("record delivery attempt %s: %w", id, err)
	}
	return nil
}
