-- Finished runs per job: what decides whether a job still runs in the draft
-- pool (its first N runs, R5.1). Maintained by accrual when a driver pod
-- closes, so reading it never scans the usage history.
CREATE TABLE job_stats (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    job              text        NOT NULL,
    finished_runs    bigint      NOT NULL CHECK (finished_runs >= 0),
    last_finished_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, job)
);
