"""The job worker: claims jobs from the queue the gateway fills (api/jobs.md), runs them with
the ML service's own code (or the sandbox), and reports each outcome to the gateway."""
