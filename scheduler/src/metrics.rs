//! Prometheus metrics of the scheduler, served with `/healthz` on a plain
//! port by `sparkcap-scheduler run --metrics-addr`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The scheduler's metrics. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Scheduling passes.
    pub passes: IntCounter,
    /// Time of one pass (observe, plan, act).
    pub pass_duration: Histogram,
    /// Pods waiting, by pool.
    pub queue_depth: IntGaugeVec,
    /// Binds, by pool and placement (`borrowed` true for opportunistic).
    pub binds: IntCounterVec,
    /// Binds the API server refused or that could not be confirmed.
    pub bind_errors: IntCounter,
    /// Opportunistic pods evicted to give dedicated capacity back, by the victims' tenant.
    pub preemptions: IntCounterVec,
    /// Events recorded on pods, by reason.
    pub events: IntCounterVec,
    /// Seconds since the last successful accrual batch (0 right after one).
    pub accrual_lag: IntGauge,
    /// Accruals the ledger refused.
    pub accrual_rejections: IntCounter,
    /// Pods being deleted for over a minute that still carry the metering finalizer.
    pub finalizers_stuck: IntGauge,
    /// 1 while this replica holds the Lease and schedules.
    pub leader: IntGauge,
    /// Spark Units per pool as last written to the ledger.
    pub spark_units: IntGaugeVec,
    /// Notices raised (promotions, SLA misses, failures, low balances), by kind.
    pub notices: IntCounterVec,
    /// Failed POSTs of notices to tenants' URLs.
    pub notice_failures: IntCounter,
    /// ScheduledSparkApplication reconciliations, by result.
    pub reservations: IntCounterVec,
    /// Disagreements between the ledger and the cluster at the last audit, by kind.
    pub audit_findings: IntGaugeVec,
    /// When the ledger was last audited against the cluster (Unix seconds).
    pub audit_last_run: IntGauge,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let m = Self {
            passes: counter("sparkcap_scheduler_passes_total", "Scheduling passes"),
            pass_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "sparkcap_scheduler_pass_duration_seconds",
                    "Time of one scheduling pass: observe, plan and act",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )
            .expect("valid metric"),
            queue_depth: gauge_vec("sparkcap_scheduler_queue_depth", "Pods waiting for a node", &["pool"]),
            binds: counter_vec("sparkcap_scheduler_binds_total", "Pods bound", &["pool", "borrowed"]),
            bind_errors: counter("sparkcap_scheduler_bind_errors_total", "Binds that failed"),
            preemptions: counter_vec(
                "sparkcap_scheduler_preemptions_total",
                "Borrowed pods evicted for dedicated capacity, by their tenant",
                &["tenant"],
            ),
            events: counter_vec(
                "sparkcap_scheduler_events_total",
                "Events recorded on pods",
                &["reason"],
            ),
            accrual_lag: IntGauge::new(
                "sparkcap_scheduler_accrual_lag_seconds",
                "Seconds since the last successful accrual batch",
            )
            .expect("valid metric"),
            accrual_rejections: counter(
                "sparkcap_scheduler_accrual_rejections_total",
                "Accruals the ledger refused",
            ),
            finalizers_stuck: IntGauge::new(
                "sparkcap_metering_finalizers_stuck",
                "Pods deleted over a minute ago still held by sparkcap's metering finalizer (the ledger or the webhook unreachable)",
            )
            .expect("valid metric"),
            leader: IntGauge::new("sparkcap_scheduler_leader", "1 while this replica leads").expect("valid metric"),
            spark_units: gauge_vec(
                "sparkcap_scheduler_spark_units",
                "Spark Units per pool, as registered in the ledger",
                &["pool"],
            ),
            notices: counter_vec("sparkcap_notices_total", "Notices raised, by kind", &["kind"]),
            notice_failures: counter(
                "sparkcap_notice_delivery_failures_total",
                "Failed deliveries of notices to tenants' notification URLs",
            ),
            reservations: counter_vec(
                "sparkcap_schedule_reconciliations_total",
                "ScheduledSparkApplication reservations reconciled, by result",
                &["result"],
            ),
            audit_findings: gauge_vec(
                "sparkcap_audit_findings",
                "Disagreements between the ledger and the pods the cluster ran, at the last audit, by kind",
                &["kind"],
            ),
            audit_last_run: IntGauge::new(
                "sparkcap_audit_last_run_timestamp_seconds",
                "When the ledger was last audited against the cluster",
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.passes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.pass_duration.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.binds.clone()),
            Box::new(m.bind_errors.clone()),
            Box::new(m.preemptions.clone()),
            Box::new(m.events.clone()),
            Box::new(m.accrual_lag.clone()),
            Box::new(m.accrual_rejections.clone()),
            Box::new(m.finalizers_stuck.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.spark_units.clone()),
            Box::new(m.notices.clone()),
            Box::new(m.notice_failures.clone()),
            Box::new(m.reservations.clone()),
            Box::new(m.audit_findings.clone()),
            Box::new(m.audit_last_run.clone()),
        ] {
            m.registry.register(c).expect("unique metric");
        }
        m
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// `/metrics` and `/healthz` on `addr` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = self.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            m.render(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }));
        axum::serve(listener, app).await
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
