//! A sparkcap-scheduler replica inside a test: the production kube shell on
//! the test control plane, stopped when its handle is dropped.

use crate::apiserver::ApiServer;
use sparkcap_ledger::LedgerStore;
use sparkcap_scheduler::shell::{self, ShellConfig};
use std::sync::Arc;

/// Starts a replica with `config`; it stops (as if killed between two
/// passes) when the returned sender is dropped.
pub fn start(
    server: &ApiServer,
    store: &Arc<dyn LedgerStore>,
    config: ShellConfig,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, store) = (server.client(), store.clone());
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        if let Err(e) = shell::run(client, store, config, stopped).await {
            eprintln!("scheduler stopped: {e:#}");
        }
    });
    stop
}
