-- What sparkcap decided when it bound each pod (tenant from the ledger's
-- namespace binding, pool, cpu, borrowed or not), written before the
-- binding is sent: every charge is built from this row, never from labels a
-- tenant can change, and no pod sparkcap bound can lack a ledger row.
-- closed_at is set for a pod that went without ever starting (nothing to
-- charge); a started pod's binding closes with its pod_usage row.
CREATE TABLE pod_bindings (
    pod_uid       text PRIMARY KEY,
    tenant_id     text        NOT NULL REFERENCES tenants (id),
    namespace     text        NOT NULL,
    pod_name      text        NOT NULL,
    app_id        text,
    job           text,
    role          text,
    pool          text        NOT NULL CHECK (pool IN ('dedicated', 'shared', 'draft')),
    cpu_mc        bigint      NOT NULL CHECK (cpu_mc > 0),
    opportunistic boolean     NOT NULL,
    node          text        NOT NULL,
    bound_at      timestamptz NOT NULL,
    closed_at     timestamptz,
    epoch         bigint      NOT NULL
);
CREATE INDEX pod_bindings_open ON pod_bindings (bound_at) WHERE closed_at IS NULL;
