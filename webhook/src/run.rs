//! Runs the webhook: the ops port at once, the admission port as soon as a
//! serving certificate exists, certificate reloads, graceful shutdown.

use crate::api::ApiState;
use crate::certs::CertFiles;
use crate::guard::{BodyBudget, CappedAcceptor, ConnLimits, read_body};
use crate::metrics::Metrics;
use crate::server::{AppState, admission_router, ops_router};
use crate::sync::ViewHandle;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS AdmissionReview port.
    pub admission: std::net::TcpListener,
    /// Plain /healthz, /readyz, /metrics port.
    pub ops: std::net::TcpListener,
    /// HTTPS tenant REST API port, with what it serves.
    pub api: Option<(std::net::TcpListener, ApiState)>,
    /// What one connection to the HTTPS ports may hold.
    pub limits: ConnLimits,
}

/// How in-flight reviews are given time to finish on shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes, then drains open requests.
pub async fn run(
    listeners: Listeners,
    cert: CertFiles,
    cert_poll: Duration,
    view: ViewHandle,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = AppState {
        view,
        metrics: metrics.clone(),
        cert_loaded: Arc::new(AtomicBool::new(false)),
    };
    listeners.ops.set_nonblocking(true)?;
    listeners.admission.set_nonblocking(true)?;
    if let Some((api, _)) = &listeners.api {
        api.set_nonblocking(true)?;
    }
    let ops = tokio::net::TcpListener::from_std(listeners.ops)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut ops_stop = stop_rx.clone();
    let ops_task = tokio::spawn(
        axum::serve(ops, ops_router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = ops_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    let stop_ops = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining open reviews");
        h.graceful_shutdown(Some(DRAIN));
        let _ = stop_tx.send(true);
    });
    let mut early_stop = stop_rx.clone();
    let loading = cert.clone();
    let config = tokio::select! {
        c = loading.load_when_present() => c,
        _ = async move { let _ = early_stop.wait_for(|s| *s).await; } => { let _ = ops_task.await; return Ok(()); }
    };
    state.cert_loaded.store(true, Ordering::Release);
    let mut reload = tokio::spawn(cert.watch(config.clone(), cert_poll, metrics));
    let limits = listeners.limits;
    let guarded = |listener: std::net::TcpListener, router: axum::Router| {
        let budget = BodyBudget::new(&limits, crate::server::MAX_BODY);
        let router = router.layer(axum::middleware::from_fn_with_state(budget, read_body));
        let mut server = axum_server::from_tcp_rustls(listener, config.clone())
            .map(|tls| {
                tls.handshake_timeout(limits.header_timeout)
                    .acceptor(CappedAcceptor::new(&limits))
            })
            .handle(handle.clone());
        limits.configure(&mut server);
        server.serve(router.into_make_service())
    };
    let api_task = listeners
        .api
        .map(|(listener, api)| tokio::spawn(guarded(listener, crate::api::router(api))));
    let served = guarded(listeners.admission, admission_router(state));
    tokio::pin!(served);
    // The certificate reload never ends while serving: if it does, a
    // rotated certificate would never be picked up. Drain and stop.
    let mut reload_ended = false;
    let served = tokio::select! {
        r = &mut served => r,
        r = &mut reload => {
            tracing::error!(outcome = ?r, "the certificate reload task ended; stopping");
            reload_ended = true;
            handle.graceful_shutdown(Some(DRAIN));
            let _ = stop_ops.send(true);
            served.await
        }
    };
    if let Some(t) = api_task {
        match t.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "API server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "API server task failed"),
            Ok(Ok(())) => {}
        }
    }
    reload.abort();
    let _ = ops_task.await;
    if reload_ended {
        return Err(std::io::Error::other("the certificate reload task ended"));
    }
    served
}
