-- Job schedules planned in time slices (R7). Only the schedules are stored:
-- the per-slice reservations are derived from them (pure, milliseconds for
-- 500 schedules over 30 days), under a per-pool advisory lock, so a
-- schedule change is reflected at once and reservations can never drift
-- from the schedules they come from.
CREATE TABLE job_schedules (
    tenant_id          text        NOT NULL REFERENCES tenants (id),
    job                text        NOT NULL CHECK (job <> ''),
    pool               text        NOT NULL CHECK (pool IN ('dedicated', 'shared', 'draft')),
    schedule           text        NOT NULL,
    utc_offset_minutes integer     NOT NULL CHECK (utc_offset_minutes BETWEEN -840 AND 840),
    duration_seconds   bigint      NOT NULL CHECK (duration_seconds BETWEEN 1 AND 86400),
    cores_mc           bigint      NOT NULL CHECK (cores_mc > 0),
    source             text        NOT NULL,
    updated_at         timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, job)
);
CREATE INDEX job_schedules_pool ON job_schedules (pool);
