//! Named crash points, for the fault suite. A crash point is a place where
//! the process may die mid-step (between a ledger commit and the writer's
//! memory of it, between an eviction and its record). The fault suite arms
//! them through `FAILPOINTS` (the `fail` crate's syntax, e.g.
//! `FAILPOINTS='ledger.accrue.after_commit=2%return'`): `return` aborts the
//! process there, as SIGKILL or a node failure would; `sleep(ms)` stalls it.
//!
//! Only builds with the `failpoints` feature have them (the workspace's test
//! builds do); elsewhere [`crash_point`] compiles to nothing.

/// Dies here when the fault suite armed `name`.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    fn crash(name: &str) {
        eprintln!("sparkcap: crash point {name} armed: aborting here");
        std::process::abort();
    }
    fail::fail_point!(name, |_| crash(name));
}

/// Dies here when the fault suite armed `name` (this build has no crash points).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// The crash points armed from `FAILPOINTS`, for as long as this lives.
#[derive(Debug)]
pub struct Armed {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

/// Arms the crash points `FAILPOINTS` names. Says so on standard error (the
/// fault suite reads it), and warns when this build cannot honour them.
pub fn arm_from_env() -> Armed {
    let wanted = std::env::var("FAILPOINTS").ok().filter(|v| !v.trim().is_empty());
    #[cfg(feature = "failpoints")]
    {
        let scenario = fail::FailScenario::setup();
        if let Some(w) = wanted {
            eprintln!("sparkcap: crash points armed: {w}");
        }
        Armed { _scenario: scenario }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        if let Some(w) = wanted {
            eprintln!(
                "sparkcap: FAILPOINTS={w} ignored: this build has no crash points (build with --features failpoints)"
            );
        }
        Armed {}
    }
}
