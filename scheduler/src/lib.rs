//! sparkcap's scheduler: places every pod that names `sparkcap-scheduler`,
//! knowing tenants, pools, Spark applications and money. The decision
//! ([`plan::plan`]) is pure with time passed in, so the simulator runs the
//! very same code in virtual time.

pub mod audit;
pub mod fenced;
pub mod fit;
pub mod leader;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod notifier;
pub mod observe;
pub mod onboarding;
pub mod plan;
pub mod reservations;
pub mod shell;
pub mod sim;
pub mod usage;
