//! Prometheus metrics of the webhook, served on the plain metrics port.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

/// The webhook's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reviews answered, by endpoint, resource and outcome.
    pub admissions: IntCounterVec,
    /// Server-side time per review (decode + decide + encode).
    pub duration: HistogramVec,
    /// Bodies that were not AdmissionReviews.
    pub bad_requests: IntCounter,
    /// Serving certificate reloads, by result.
    pub cert_reloads: IntCounterVec,
    /// REST API requests, by route, method and status.
    pub api_requests: IntCounterVec,
    /// REST API server-side time, by route.
    pub api_duration: HistogramVec,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let admissions = IntCounterVec::new(
            Opts::new("sparkcap_webhook_admissions_total", "Admission reviews answered"),
            &["endpoint", "resource", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sparkcap_webhook_review_duration_seconds",
                "Server-side time to decode, decide and encode one review",
            )
            .buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.005, 0.01, 0.05,
            ]),
            &["endpoint"],
        )
        .expect("valid metric");
        let bad_requests = IntCounter::new(
            "sparkcap_webhook_bad_requests_total",
            "Request bodies that were not AdmissionReviews",
        )
        .expect("valid metric");
        let cert_reloads = IntCounterVec::new(
            Opts::new(
                "sparkcap_webhook_certificate_reloads_total",
                "Serving certificate reloads",
            ),
            &["result"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            Opts::new("sparkcap_api_requests_total", "Tenant REST API requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "sparkcap_api_request_duration_seconds",
                "Tenant REST API server-side time",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        for c in [
            Box::new(admissions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(bad_requests.clone()),
            Box::new(cert_reloads.clone()),
            Box::new(api_requests.clone()),
            Box::new(api_duration.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            admissions,
            duration,
            bad_requests,
            cert_reloads,
            api_requests,
            api_duration,
        }
    }

    /// Text exposition, with `extra` lines (gauges computed at scrape time).
    pub fn render(&self, extra: &str) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        let mut s = String::from_utf8(buf).expect("prometheus text is UTF-8");
        s.push_str(extra);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
