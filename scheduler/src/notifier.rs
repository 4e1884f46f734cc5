//! Delivers the ledger's notice outbox (R5.4, R9.3, R11.5): each notice
//! becomes a Kubernetes Event in its tenant's namespace and a Prometheus
//! count once, and is POSTed to the tenant's notification URL (if it set
//! one) until the receiver answers 2xx, with exponential backoff, giving up
//! after [`MAX_ATTEMPTS`]. Notices are written by the transaction that
//! caused them, so none is lost if this process dies; a receiver may see a
//! notice twice after a crash and can drop repeats by its `id`.

use crate::fenced::FencedStore;
use crate::shell::ShellConfig;
use chrono::{DateTime, TimeDelta, Utc};
use kube::Client;
use serde_json::json;
use sparkcap_ledger::egress::EgressPolicy;
use sparkcap_ledger::lifecycle::Notice;
use sparkcap_ledger::store::{Delivery, NoticeQuery};
use sparkcap_ledger::{LedgerError, TenantId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Failed POSTs before a notice is given up on (its Event stays).
pub const MAX_ATTEMPTS: i32 = 8;
/// Wait before the first retry; doubles per failure, at most [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(5);
/// Longest wait between retries.
pub const MAX_BACKOFF: TimeDelta = TimeDelta::minutes(10);

/// When a notice that failed `attempts` times, last at `last`, is due again.
pub fn due_at(last: Option<DateTime<Utc>>, attempts: i32) -> Option<DateTime<Utc>> {
    let last = last?;
    if attempts <= 0 {
        return Some(last);
    }
    let factor = 1_i64 << (attempts - 1).clamp(0, 20);
    Some(last + (FIRST_BACKOFF * factor as i32).min(MAX_BACKOFF))
}

/// The JSON body POSTed to a tenant's URL.
pub fn body(n: &Notice) -> serde_json::Value {
    json!({
        "id": n.id,
        "tenant": n.tenant,
        "job": n.job,
        "kind": n.kind.as_str(),
        "at": n.at,
        "message": n.message,
        "recommended_cores": n.recommended_cores.map(|c| c.0 as f64 / 1000.0),
    })
}

/// One pass over the outbox at `now`: what is due is delivered. Returns how
/// many notices were settled.
pub async fn deliver_due(
    client: &Client,
    http: &reqwest::Client,
    store: &FencedStore,
    config: &ShellConfig,
    now: DateTime<Utc>,
) -> Result<usize, LedgerError> {
    let pending = store
        .reads()
        .notices(&NoticeQuery {
            tenant: None,
            undelivered: true,
            cursor: None,
            limit: 200,
        })
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let urls: HashMap<TenantId, String> = store.reads().notify_urls().await?.into_iter().collect();
    let mut namespaces: HashMap<TenantId, String> = HashMap::new();
    for b in store.reads().namespace_bindings().await? {
        // The first namespace by name is the tenant's notice board.
        namespaces.entry(b.tenant).or_insert(b.namespace);
    }
    let mut settled = 0;
    for n in pending {
        if due_at(n.last_attempt_at, n.attempts).is_some_and(|t| now < t) {
            continue;
        }
        if n.last_attempt_at.is_none() {
            config.metrics.notices.with_label_values(&[n.kind.as_str()]).inc();
            if let Some(ns) = namespaces.get(&n.tenant) {
                let involved = json!({"apiVersion": "v1", "kind": "Namespace", "name": ns});
                let reason = reason(&n);
                if let Err(e) =
                    crate::shell::record_event(client, ns, involved, ns, &reason, &n.message, n.kind.event_type(), now)
                        .await
                {
                    tracing::warn!(notice = n.id, error = %e, "could not record the notice's Event");
                }
            }
        }
        let delivery = match urls.get(&n.tenant) {
            None => Delivery::Delivered,
            // A URL the egress rule refuses will not become acceptable by
            // retrying: given up at once, with the reason.
            Some(url) => match config.egress.check_url(url) {
                Err(e) => {
                    config.metrics.notice_failures.inc();
                    Delivery::GaveUp(e.to_string())
                }
                Ok(checked) => match post(http, checked, &n).await {
                    Ok(()) => Delivery::Delivered,
                    Err(why) if n.attempts + 1 >= MAX_ATTEMPTS => {
                        config.metrics.notice_failures.inc();
                        Delivery::GaveUp(why)
                    }
                    Err(why) => {
                        config.metrics.notice_failures.inc();
                        Delivery::Failed(why)
                    }
                },
            },
        };
        store.settle_notice(n.id, &delivery, now).await?;
        settled += 1;
    }
    Ok(settled)
}

/// The Event reason for a notice: its kind in UpperCamelCase.
fn reason(n: &Notice) -> String {
    n.kind
        .as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// POSTs one notice to `url`, checked by the egress rule just before (an
/// allow-list may have shrunk since it was set, a URL may predate the
/// rule). DNS answers are checked by [`CheckedResolver`]; a redirect is an
/// error, never followed.
async fn post(http: &reqwest::Client, url: reqwest::Url, n: &Notice) -> Result<(), String> {
    let resp = http
        .post(url.clone())
        .header("Idempotency-Key", format!("sparkcap-notice-{}", n.id))
        .json(&body(n))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else if resp.status().is_redirection() {
        Err(format!(
            "POST {url}: HTTP {}; redirects are not followed, set the final URL",
            resp.status()
        ))
    } else {
        Err(format!("POST {url}: HTTP {}", resp.status()))
    }
}

/// Resolves a notification host and keeps only the addresses the egress
/// rule allows, so that the connection goes only where was checked (no
/// second lookup an attacker's DNS could answer differently).
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    egress: EgressPolicy,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<std::net::SocketAddr> = addrs
                .into_iter()
                .filter(|a| match egress.check_ip(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            match (ok.is_empty(), refused) {
                (true, Some(e)) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The HTTP client notices are sent with: 5 s per POST, no redirects, no
/// proxy from the environment, DNS answers checked.
pub fn http_client(egress: &EgressPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver { egress: egress.clone() }))
        .build()
        .expect("an HTTP client")
}

/// Delivers the outbox every `config.notify_period` until cancelled or
/// deposed (the error says so).
pub async fn run(client: Client, store: FencedStore, config: ShellConfig) -> Result<(), LedgerError> {
    let http = http_client(&config.egress);
    let mut tick = tokio::time::interval(config.notify_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sparkcap_ledger::faults::crash_point("scheduler.notifier.tick");
        match deliver_due(&client, &http, &store, &config, Utc::now()).await {
            Err(e) if e.is_deposed() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "delivering notices failed; retrying"),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(due_at(None, 0), None);
        assert_eq!(due_at(Some(t), 1), Some(t + TimeDelta::seconds(5)));
        assert_eq!(due_at(Some(t), 2), Some(t + TimeDelta::seconds(10)));
        assert_eq!(due_at(Some(t), 4), Some(t + TimeDelta::seconds(40)));
        assert_eq!(due_at(Some(t), 30), Some(t + MAX_BACKOFF));
    }

    /// The DNS-time check: a public-looking name that resolves to loopback
    /// (here `localhost`, through the system resolver) gets no address to
    /// connect to, unless its host is allow-listed.
    #[tokio::test]
    async fn names_resolving_to_internal_addresses_get_none() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        let strict = CheckedResolver {
            egress: EgressPolicy::default(),
        };
        let e = strict.resolve(name("localhost")).await.err().unwrap().to_string();
        assert!(e.contains("loopback"), "{e}");
        let allowed = CheckedResolver {
            egress: EgressPolicy::allowing(["localhost"]),
        };
        let addrs: Vec<_> = allowed.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn event_reasons_are_camel_case() {
        let n = Notice::new(
            &TenantId::new("acme").unwrap(),
            None,
            sparkcap_ledger::lifecycle::NoticeKind::SlaExceeded,
            Utc::now(),
            String::new(),
        );
        assert_eq!(reason(&n), "SlaExceeded");
    }
}
