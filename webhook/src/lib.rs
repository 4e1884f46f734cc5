//! sparkcap's admission webhook: routes every Spark pod in a tenant namespace
//! to sparkcap's scheduler and refuses, with a message a person can act on,
//! what the tenant has not paid for. The decision ([`admit::admit`]) is pure;
//! everything else here feeds it or carries its answer. [`api`] serves the
//! tenant REST API from the same tenant view.

pub mod api;
pub mod certs;
pub mod guard;
pub mod metrics;
pub mod run;
pub mod selfcert;
pub mod server;
pub mod sync;

// The Spark rules and the admission decision live in `sparkcap-core`; they
// are served here under the names they always had.
pub use sparkcap_core::{admit, operator, review, spark, view};
