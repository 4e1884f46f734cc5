//! sparkcap's workspace-level test support: deterministic workloads and the
//! processes the end-to-end and fault tests drive.

pub mod api_env;
pub mod apiserver;
pub mod devcluster;
pub mod faults;
pub mod harness;
pub mod kubectl;
pub mod kubelet;
pub mod scheduler;
pub mod spark;
pub mod tls;
pub mod webhook;
pub mod workload;
