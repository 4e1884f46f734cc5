//! `sparkcap-scheduler simulate`: the production decision code — the
//! webhook's `admit`, the scheduler's `plan`, the ledger's accruals — over a
//! simulated cluster in virtual time, with a report a capacity planner reads.

pub mod compare;
pub mod default_day;
pub mod engine;
pub mod html;
pub mod report;
pub mod spark_pods;
pub mod trace;

pub use engine::{Options, SimError, run};
pub use report::Report;
pub use trace::{Trace, TraceError};

use std::path::{Path, PathBuf};

/// Writes `report.json` and `report.html` into `dir` (created if missing);
/// returns their paths.
pub fn write_outputs(report: &Report, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let mut text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(&json, text)?;
    std::fs::write(&html, html::render(report))?;
    Ok((json, html))
}
