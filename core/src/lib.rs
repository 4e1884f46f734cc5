//! sparkcap's Spark rules in one place, with no I/O: how a pod, a
//! `spark.properties` ConfigMap or a SparkApplication is read ([`spark`],
//! [`operator`]), the tenant facts admission decides over ([`view`],
//! gathered from the ledger by [`facts`]), and the admission decision itself
//! ([`admit::admit`] over a [`review`]). The webhook serves it; the
//! scheduler's simulator replays it; neither has its own copy.

pub mod admit;
pub mod facts;
pub mod operator;
pub mod policy;
pub mod review;
pub mod spark;
pub mod view;
