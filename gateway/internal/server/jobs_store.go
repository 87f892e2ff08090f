package server

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/config"
	"trine/gateway/internal/jobs"
)

// openJobs opens the job queue the configuration selects and builds the
// runner that delivers webhooks and reaps expired leases.
func (s *Server) openJobs(ctx context.Context) error {
	jc := s.cfg.Jobs
	switch jc.Backend {
	case config.JobsBackendRedis:
		opts, err := redis.ParseURL(s.cfg.Limits.RedisURL.String())
		if err != nil {
			return fmt.Errorf("jobs: REDIS_URL: %w", err)
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		store := jobs.NewRedis(redis.NewClient(opts), nil)
		s.jobs = store
		s.ensureJobsGroup = store.EnsureGroup
	default:
		store, err := jobs.OpenSQLite(ctx, jc.SQLitePath, nil)
		if err != nil {
			return err
		}
		s.jobs = store
	}
	s.jobsPolicy = jobs.URLPolicy{AllowHTTP: jc.WebhookAllowHTTP, AllowPrivate: jc.WebhookAllowPrivate}
	sender := jobs.NewSender(s.jobsPolicy, jobs.Backoff{
		Initial: jc.WebhookInitialBackoff, Max: jc.WebhookMaxBackoff, Window: jc.WebhookRetryWindow,
	}, s.webhookSecret)
	s.jobRunner = jobs.NewRunner(s.jobs, sender, s.log)
	s.jobRunner.Retention = jobs.Retention{Jobs: jc.Retention, IdempotencyKeys: jc.IdempotencyRetention}
	s.jobRunner.OnReaped = func(j jobs.Job) { s.metrics.JobFinished(j.Type, j.Status) }
	s.jobRunner.OnAttempt = s.metrics.WebhookAttempt
	return nil
}

// webhookSecret returns the signing key of an API key's webhooks, if the
// key (still) exists and has one.
func (s *Server) webhookSecret(owner string) ([]byte, bool) {
	k, ok := s.keys.KeyByID(owner)
	return k.WebhookSecret, ok && len(k.WebhookSecret) > 0
}

// RunJobs runs the job queue's background work (webhook deliveries, the
// reaper) until ctx is done and it has stopped. Run calls it; tests that
// serve with httptest call it themselves.
func (s *Server) RunJobs(ctx context.Context) {
	if s.ensureJobsGroup != nil {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// The workers create the group too, so this is not fatal.
		if err := s.ensureJobsGroup(gctx); err != nil {
			s.log.Warn("could not create the jobs consumer group; the workers will", "error", err.Error())
		}
		cancel()
	}
	s.jobRunner.Run(ctx)
}

// Close releases what New opened: the job store and the limiter's
// connections. Run calls it on the way out.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.jobs.Close()
		if err := s.closeLimiter(); s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}
