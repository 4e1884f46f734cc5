//! The real kubectl, run against a test control plane, and a control plane
//! served over HTTPS the way kubectl meets kube-apiserver.

use crate::apiserver::ApiServer;
use crate::devcluster::{serve_tls, write_kubeconfig};
use crate::tls::TestCa;
use std::path::{Path, PathBuf};
use std::process::Output;
use tokio::process::Command;

/// Whether kubectl is installed.
pub fn available() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs kubectl with `kubeconfig`.
pub async fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run kubectl")
}

/// What kubectl printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Serves `server` over HTTPS on a free port with a fresh CA and writes a
/// kubeconfig for it into `dir`; returns the kubeconfig's path.
pub fn serve_with_kubeconfig(server: &ApiServer, dir: &Path) -> PathBuf {
    let ca = TestCa::new();
    let cert = ca.issue(&["127.0.0.1"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    let kc = dir.join("kubeconfig");
    write_kubeconfig(&kc, &url, Some(&ca.ca_bundle())).expect("write kubeconfig");
    let srv = server.clone();
    tokio::spawn(async move { serve_tls(srv, listener, &cert).await });
    kc
}
