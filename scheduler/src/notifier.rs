//! Delivers the ledger's notice outbox (R5.4, R9.3, R11.5): each notice
//! becomes a Kubernetes Event in its tenant's namespace and a Prometheus
//! count once, and is POSTed to the tenant's notification URL (if it set
//! one) until the receiver answers 2xx, with exponential backoff, giving up
//! after [`MAX_ATTEMPTS`]. Notices are written by the transaction that
//! caused them, so none is lost if this process dies; a receiver may see a
//! notice twice after a crash and can drop repeats by its `id`.

use crate::shell::ShellConfig;
use chrono::{DateTime, TimeDelta, Utc};
use kube::Client;
use serde_json::json;
use sparkcap_ledger::lifecycle::Notice;
use sparkcap_ledger::store::{Delivery, NoticeQuery};
use sparkcap_ledger::{LedgerError, LedgerStore, TenantId};
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
    store: &dyn LedgerStore,
    config: &ShellConfig,
    now: DateTime<Utc>,
) -> Result<usize, LedgerError> {
    let pending = store
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
    let urls: HashMap<TenantId, String> = store.notify_urls().await?.into_iter().collect();
    let mut namespaces: HashMap<TenantId, String> = HashMap::new();
    for b in store.namespace_bindings().await? {
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
            Some(url) => match post(http, url, &n).await {
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

async fn post(http: &reqwest::Client, url: &str, n: &Notice) -> Result<(), String> {
    let resp = http
        .post(url)
        .header("Idempotency-Key", format!("sparkcap-notice-{}", n.id))
        .json(&body(n))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {}", resp.status()))
    }
}

/// Delivers the outbox every `config.notify_period` until cancelled.
pub async fn run(client: Client, store: Arc<dyn LedgerStore>, config: ShellConfig) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let mut tick = tokio::time::interval(config.notify_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = deliver_due(&client, &http, store.as_ref(), &config, Utc::now()).await {
            tracing::warn!(error = %e, "delivering notices failed; retrying");
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
