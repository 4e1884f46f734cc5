-- sparkcap ledger schema. Integers only: cpu in millicores (mc), usage in
-- millicore-seconds (mcs); 1 vCPU-hour = 3,600,000 mcs.

CREATE TABLE tenants (
    id                       text PRIMARY KEY,
    display_name             text        NOT NULL,
    status                   text        NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at               timestamptz NOT NULL,
    -- Running totals, moved in the same transaction as the journal lines.
    consumed_mcs             bigint      NOT NULL DEFAULT 0 CHECK (consumed_mcs >= 0),
    opportunistic_mcs        bigint      NOT NULL DEFAULT 0 CHECK (opportunistic_mcs >= 0),
    -- Usage no purchase has paid for yet (running jobs are never killed for money).
    debt_mcs                 bigint      NOT NULL DEFAULT 0 CHECK (debt_mcs >= 0),
    debt_since               timestamptz,
    -- Usage of pods removed by the 90-day history prune, so totals still reconcile.
    pruned_charged_mcs       bigint      NOT NULL DEFAULT 0,
    pruned_opportunistic_mcs bigint      NOT NULL DEFAULT 0,
    CHECK ((debt_mcs = 0) = (debt_since IS NULL))
);

CREATE TABLE namespace_bindings (
    namespace text PRIMARY KEY,
    tenant_id text        NOT NULL REFERENCES tenants (id),
    bound_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX namespace_bindings_tenant ON namespace_bindings (tenant_id);

-- The fencing token: one row; a writer's epoch must equal it.
CREATE TABLE ledger_fence (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch      bigint      NOT NULL,
    holder     text        NOT NULL,
    claimed_at timestamptz NOT NULL
);
INSERT INTO ledger_fence (id, epoch, holder, claimed_at) VALUES (true, 0, '', now());

CREATE TABLE pools (
    pool         text PRIMARY KEY CHECK (pool IN ('dedicated', 'shared', 'draft')),
    nodes        bigint      NOT NULL CHECK (nodes >= 0),
    cpu_mc       bigint      NOT NULL CHECK (cpu_mc >= 0),
    memory_bytes bigint      NOT NULL CHECK (memory_bytes >= 0),
    spark_units  bigint      NOT NULL CHECK (spark_units >= 0),
    updated_at   timestamptz NOT NULL
);

CREATE TABLE purchases (
    id              bigserial PRIMARY KEY,
    tenant_id       text        NOT NULL REFERENCES tenants (id),
    kind            text        NOT NULL CHECK (kind IN ('dedicated_units', 'vcpu_hours')),
    quantity        bigint      NOT NULL CHECK (quantity > 0),
    period          text        NOT NULL CHECK (period IN ('daily', 'monthly', 'yearly')),
    valid_from      timestamptz NOT NULL,
    valid_until     timestamptz NOT NULL,
    amount_mcs      bigint      NOT NULL CHECK (amount_mcs >= 0),
    consumed_mcs    bigint      NOT NULL DEFAULT 0,
    -- Kept forever: a retry years later still returns the original.
    idempotency_key text        NOT NULL UNIQUE,
    request         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    CHECK (valid_until > valid_from),
    CHECK (consumed_mcs >= 0 AND consumed_mcs <= amount_mcs)
);
CREATE INDEX purchases_tenant ON purchases (tenant_id, valid_until);
CREATE INDEX purchases_dedicated ON purchases (valid_until) WHERE kind = 'dedicated_units';

-- One row per pod: its fixed facts and the accrual checkpoint. fillfactor
-- leaves room for HOT updates of charged_until, which is not indexed.
CREATE TABLE pod_usage (
    pod_uid           text PRIMARY KEY,
    tenant_id         text        NOT NULL REFERENCES tenants (id),
    namespace         text        NOT NULL,
    pod_name          text        NOT NULL,
    app_id            text,
    job               text,
    role              text,
    pool              text        NOT NULL CHECK (pool IN ('dedicated', 'shared', 'draft')),
    cpu_mc            bigint      NOT NULL CHECK (cpu_mc > 0),
    opportunistic     boolean     NOT NULL,
    started_at        timestamptz NOT NULL,
    charged_until     timestamptz NOT NULL,
    finished_at       timestamptz,
    charged_mcs       bigint      NOT NULL CHECK (charged_mcs >= 0),
    opportunistic_mcs bigint      NOT NULL CHECK (opportunistic_mcs >= 0),
    epoch             bigint      NOT NULL,
    CHECK (charged_until >= started_at),
    CHECK (finished_at IS NULL OR finished_at = charged_until),
    CHECK (NOT opportunistic OR charged_mcs = 0)
) WITH (fillfactor = 80);
CREATE INDEX pod_usage_open ON pod_usage (tenant_id) WHERE finished_at IS NULL;
CREATE INDEX pod_usage_runs ON pod_usage (tenant_id, job, started_at);
CREATE INDEX pod_usage_finished ON pod_usage (finished_at);

-- The journal: one line per accrued interval, keyed by pod and interval
-- start, partitioned by month so 90-day retention drops whole partitions.
CREATE TABLE usage_intervals (
    pod_uid           text        NOT NULL,
    tenant_id         text        NOT NULL,
    pool              text        NOT NULL,
    from_ts           timestamptz NOT NULL,
    to_ts             timestamptz NOT NULL,
    cpu_mc            bigint      NOT NULL,
    charged_mcs       bigint      NOT NULL,
    opportunistic_mcs bigint      NOT NULL,
    epoch             bigint      NOT NULL,
    PRIMARY KEY (pod_uid, from_ts),
    CHECK (to_ts > from_ts)
) PARTITION BY RANGE (from_ts);

-- Usage per tenant, pool and hour: balances' 24 h rate and usage history.
-- Small (100 tenants x 3 pools x 8,760 h a year) and kept for billing.
CREATE TABLE usage_hourly (
    tenant_id         text        NOT NULL,
    hour              timestamptz NOT NULL,
    pool              text        NOT NULL,
    charged_mcs       bigint      NOT NULL DEFAULT 0,
    opportunistic_mcs bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, pool)
);

-- Creates the monthly journal partition holding `t`, if missing.
CREATE FUNCTION sparkcap_ensure_interval_partition(t timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamptz := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := lo + interval '1 month';
    name text := 'usage_intervals_' || to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('sparkcap_partition'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF usage_intervals FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        END IF;
    END IF;
END $$;
