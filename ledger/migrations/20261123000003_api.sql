-- The tenant REST API: a service tier per tenant (its API rate limit) and how
-- each pod ended (a run's outcome in the job history, R11.1).
ALTER TABLE tenants ADD COLUMN tier text NOT NULL DEFAULT 'standard'
    CHECK (tier IN ('standard', 'premium'));
ALTER TABLE pod_usage ADD COLUMN outcome text
    CHECK (outcome IN ('succeeded', 'failed', 'preempted', 'deleted'));
ALTER TABLE pod_usage ADD CONSTRAINT pod_usage_outcome_when_finished
    CHECK (outcome IS NULL OR finished_at IS NOT NULL);
