-- Job lifecycle (R5), run profiles (R4, R11) and the notice outbox (R5.4,
-- R9.3, R11.5). All written by the accrual transaction that closes a run's
-- driver, so a promotion and its audit record land together or not at all.
ALTER TABLE job_stats
    ADD COLUMN stage text NOT NULL DEFAULT 'draft' CHECK (stage IN ('draft', 'production')),
    ADD COLUMN streak bigint NOT NULL DEFAULT 0 CHECK (streak >= 0),
    ADD COLUMN inefficient_streak bigint NOT NULL DEFAULT 0 CHECK (inefficient_streak >= 0),
    ADD COLUMN sla_seconds bigint CHECK (sla_seconds > 0),
    ADD COLUMN promoted_at timestamptz;
-- Before this, a job left the draft pool after its first 3 finished runs:
-- those jobs are in production already.
UPDATE job_stats SET stage = 'production', streak = finished_runs, promoted_at = last_finished_at
    WHERE finished_runs >= 3;

CREATE INDEX pod_usage_app ON pod_usage (app_id) WHERE app_id IS NOT NULL;

CREATE TABLE run_profiles (
    tenant_id         text        NOT NULL REFERENCES tenants (id),
    app_id            text        NOT NULL,
    job               text        NOT NULL,
    pool              text        NOT NULL CHECK (pool IN ('dedicated', 'shared', 'draft')),
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL CHECK (finished_at >= started_at),
    cores_mc          bigint      NOT NULL CHECK (cores_mc > 0),
    vcpu_mcs          bigint      NOT NULL CHECK (vcpu_mcs >= 0),
    outcome           text        NOT NULL,
    sla_seconds       bigint,
    cpu_used_mc       bigint      CHECK (cpu_used_mc >= 0),
    memory_used_bytes bigint      CHECK (memory_used_bytes >= 0),
    data_bytes        bigint      CHECK (data_bytes >= 0),
    source_type       text,
    target_type       text,
    PRIMARY KEY (tenant_id, app_id)
);
CREATE INDEX run_profiles_job ON run_profiles (tenant_id, job, finished_at DESC);
CREATE INDEX run_profiles_similar ON run_profiles (source_type, target_type, finished_at DESC)
    WHERE data_bytes IS NOT NULL AND outcome = 'succeeded';
CREATE INDEX run_profiles_finished ON run_profiles (finished_at);

CREATE TABLE notices (
    id                bigserial   PRIMARY KEY,
    tenant_id         text        NOT NULL REFERENCES tenants (id),
    job               text,
    kind              text        NOT NULL,
    at                timestamptz NOT NULL,
    message           text        NOT NULL,
    recommended_mc    bigint,
    dedupe_key        text        UNIQUE,
    attempts          integer     NOT NULL DEFAULT 0,
    last_attempt_at   timestamptz,
    last_error        text,
    delivered_at      timestamptz
);
CREATE INDEX notices_tenant ON notices (tenant_id, id DESC);
CREATE INDEX notices_pending ON notices (id) WHERE delivered_at IS NULL;

CREATE TABLE tenant_notify (
    tenant_id  text PRIMARY KEY REFERENCES tenants (id),
    url        text NOT NULL CHECK (url ~ '^https?://')
);
