//! Measured use of each running Spark application, from metrics.k8s.io
//! (metrics-server) where the cluster has it (R5.2): mean CPU and peak
//! memory over the run, summed over its pods, for the run's profile and the
//! efficiency feedback (R11.2). Sampling is I/O; [`AppUse::add_sample`] is
//! the arithmetic.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use sparkcap_ledger::quantity::{parse_cpu, parse_memory};
use sparkcap_ledger::{Bytes, Millicores};
use std::collections::HashMap;

/// What was measured of one application so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppUse {
    /// Samples taken.
    pub samples: i64,
    /// Sum over samples of the app's CPU in use, millicores.
    pub cpu_sum: i64,
    /// Highest memory in use at one sample, bytes.
    pub memory_peak: i64,
}

impl AppUse {
    /// Adds one sample: the app's pods' CPU and memory at one instant.
    pub fn add_sample(&mut self, cpu: Millicores, memory: Bytes) {
        self.samples += 1;
        self.cpu_sum = self.cpu_sum.saturating_add(cpu.0.max(0));
        self.memory_peak = self.memory_peak.max(memory.0);
    }

    /// Mean CPU over the samples.
    pub fn mean_cpu(&self) -> Option<Millicores> {
        (self.samples > 0).then(|| Millicores(self.cpu_sum / self.samples))
    }

    /// Peak memory.
    pub fn peak_memory(&self) -> Option<Bytes> {
        (self.samples > 0).then_some(Bytes(self.memory_peak))
    }
}

/// Sums one metrics.k8s.io PodMetrics list per application, joined to the
/// pods by namespace and name (metrics-server does not copy every label).
pub fn per_app<'a>(
    metrics: impl IntoIterator<Item = &'a DynamicObject>,
    pods: &[std::sync::Arc<Pod>],
) -> HashMap<String, (Millicores, Bytes)> {
    let apps: HashMap<(String, String), String> = pods
        .iter()
        .filter_map(|p| {
            let app = p.labels().get("spark-app-selector")?.clone();
            Some(((p.namespace().unwrap_or_default(), p.name_any()), app))
        })
        .collect();
    let mut out: HashMap<String, (Millicores, Bytes)> = HashMap::new();
    for m in metrics {
        let key = (m.namespace().unwrap_or_default(), m.name_any());
        let Some(app) = apps.get(&key) else { continue };
        let (mut cpu, mut mem) = (0_i64, 0_i64);
        for c in m
            .data
            .get("containers")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            let usage = c.get("usage");
            let q = |k: &str| usage.and_then(|u| u.get(k)).and_then(|v| v.as_str());
            cpu += q("cpu").and_then(|t| parse_cpu(t).ok()).map_or(0, |m| m.0);
            mem += q("memory").and_then(|t| parse_memory(t).ok()).map_or(0, |b| b.0);
        }
        let e = out.entry(app.clone()).or_insert((Millicores(0), Bytes(0)));
        e.0 = Millicores(e.0.0 + cpu);
        e.1 = Bytes(e.1.0 + mem);
    }
    out
}

/// Samples metrics.k8s.io; remembers when the cluster does not serve it and
/// asks again only after [`Sampler::RETRY`].
#[derive(Debug)]
pub struct Sampler {
    api: Api<DynamicObject>,
    unavailable_until: Option<DateTime<Utc>>,
    /// Measured use per application id.
    pub apps: HashMap<String, AppUse>,
}

impl Sampler {
    /// How long to wait before asking a cluster without metrics again.
    pub const RETRY: TimeDelta = TimeDelta::minutes(5);

    /// A sampler of `client`'s cluster.
    pub fn new(client: Client) -> Self {
        let ar = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        Self {
            api: Api::all_with(client, &ar),
            unavailable_until: None,
            apps: HashMap::new(),
        }
    }

    /// Takes one sample of the Spark pods' use, if metrics are served.
    pub async fn sample(&mut self, pods: &[std::sync::Arc<Pod>], now: DateTime<Utc>) {
        if self.unavailable_until.is_some_and(|t| now < t) {
            return;
        }
        match self.api.list(&ListParams::default().labels("spark-role")).await {
            Ok(list) => {
                self.unavailable_until = None;
                for (app, (cpu, mem)) in per_app(&list.items, pods) {
                    self.apps.entry(app).or_default().add_sample(cpu, mem);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics.k8s.io unavailable; runs are profiled without measured use");
                self.unavailable_until = Some(now + Self::RETRY);
            }
        }
    }

    /// Forgets applications with no pod left.
    pub fn retain_running(&mut self, pods: &[std::sync::Arc<Pod>]) {
        let live: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.labels().get("spark-app-selector").map(String::as_str))
            .collect();
        self.apps.retain(|a, _| live.contains(a.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_average_cpu_and_keep_peak_memory() {
        let mut u = AppUse::default();
        assert_eq!(u.mean_cpu(), None);
        u.add_sample(Millicores(1000), Bytes(10));
        u.add_sample(Millicores(3000), Bytes(30));
        u.add_sample(Millicores(2000), Bytes(20));
        assert_eq!(u.mean_cpu(), Some(Millicores(2000)));
        assert_eq!(u.peak_memory(), Some(Bytes(30)));
    }

    #[test]
    fn pod_metrics_are_summed_per_application() {
        let pod = |name: &str, app: &str| -> std::sync::Arc<Pod> {
            std::sync::Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "etl", "labels": {"spark-app-selector": app}}
                }))
                .unwrap(),
            )
        };
        let metric = |name: &str, cpu: &str, mem: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                "metadata": {"name": name, "namespace": "etl"},
                "containers": [{"name": "spark", "usage": {"cpu": cpu, "memory": mem}}]
            }))
            .unwrap()
        };
        let pods = vec![pod("d", "a1"), pod("e1", "a1"), pod("x", "a2")];
        let ms = [
            metric("d", "250m", "1Gi"),
            metric("e1", "1500m", "2Gi"),
            metric("x", "1", "512Mi"),
            metric("stranger", "4", "1Gi"),
        ];
        let by = per_app(&ms, &pods);
        assert_eq!(by["a1"], (Millicores(1750), Bytes(3 << 30)));
        assert_eq!(by["a2"], (Millicores(1000), Bytes(512 << 20)));
        assert_eq!(by.len(), 2);
    }
}
