package jobs

// decide applies a worker's outcome to j at now (Unix ms), following the
// callback rules of api/jobs.md, and returns the job's new state. applied
// is false for a callback repeating the outcome already applied. jitter is
// the retry delay's random factor (see retryJitter).
//
// Only the holder of the current lease can finish a job. The lease token is
// kept after the callback, so that the worker repeating a callback whose
// answer it lost is recognised; a later claim replaces it.
func decide(j Job, o Outcome, now int64, jitter float64) (Job, bool, error) {
	if j.LeaseToken == "" || j.LeaseToken != o.LeaseToken {
		return j, false, ErrConflict
	}
	if j.Status != StatusRunning {
		repeat := (o.Kind == OutcomeSucceeded && j.Status == StatusSucceeded) ||
			(o.Kind == OutcomeFailed && j.Status == StatusFailed) ||
			(o.Kind == OutcomeRetry && (j.Status == StatusQueued || j.Status == StatusFailed))
		if !repeat {
			return j, false, ErrConflict
		}
		return j, false, nil
	}
	j.LeaseOwner, j.LeaseExpiresAt, j.UpdatedAt = "", 0, now
	switch o.Kind {
	case OutcomeSucceeded:
		j.Status, j.Result, j.Error = StatusSucceeded, o.Result, nil
	case OutcomeFailed:
		j.Status, j.Error = StatusFailed, o.Error
	default: // retry
		j.Error = o.Error
		if j.Attempts >= j.MaxAttempts {
			j.Status = StatusFailed
		} else {
			j.Status, j.AvailableAt = StatusQueued, now+retryDelayMS(j.Attempts, jitter)
		}
	}
	return j, true, nil
}
