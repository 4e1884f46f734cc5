//! `simulate compare A.json B.json`: what changed between two what-if runs,
//! in the figures a planner decides on.

use crate::sim::report::Report;
use std::fmt::Write;

fn row(out: &mut String, what: &str, a: f64, b: f64, unit: &str, decimals: usize) {
    let delta = b - a;
    let rel = if a != 0.0 {
        format!(" ({:+.1} %)", delta / a.abs() * 100.0)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {what:<38} {a:>12.decimals$}{unit} → {b:>12.decimals$}{unit}   {delta:+.decimals$}{unit}{rel}"
    );
}

/// The comparison as text.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {} (seed {})\nB: {} (seed {})\n",
        a.trace, a.seed, b.trace, b.seed
    );
    if a.start != b.start || a.end != b.end {
        let _ = writeln!(out, "  note: the runs cover different periods\n");
    }
    for (name, pa) in &a.pools {
        if let Some(pb) = b.pools.get(name) {
            row(
                &mut out,
                &format!("{name}: Spark Units"),
                pa.spark_units as f64,
                pb.spark_units as f64,
                "",
                0,
            );
            row(
                &mut out,
                &format!("{name}: mean utilisation"),
                pa.utilization.mean * 100.0,
                pb.utilization.mean * 100.0,
                " %",
                1,
            );
        }
    }
    let (ja, jb) = (&a.jobs, &b.jobs);
    row(
        &mut out,
        "jobs completed",
        ja.completed as f64,
        jb.completed as f64,
        "",
        0,
    );
    row(&mut out, "drivers refused", a.denials as f64, b.denials as f64, "", 0);
    row(
        &mut out,
        "driver wait p50",
        ja.wait_p50_s as f64,
        jb.wait_p50_s as f64,
        " s",
        0,
    );
    row(
        &mut out,
        "driver wait p95",
        ja.wait_p95_s as f64,
        jb.wait_p95_s as f64,
        " s",
        0,
    );
    row(
        &mut out,
        "runs over SLA",
        ja.sla_missed as f64,
        jb.sla_missed as f64,
        "",
        0,
    );
    row(
        &mut out,
        "peak running applications",
        ja.peak_running as f64,
        jb.peak_running as f64,
        "",
        0,
    );
    row(
        &mut out,
        "preemptions",
        a.preemptions.count as f64,
        b.preemptions.count as f64,
        "",
        0,
    );
    row(
        &mut out,
        "worst preemption latency",
        a.preemptions.max_free_latency_s as f64,
        b.preemptions.max_free_latency_s as f64,
        " s",
        0,
    );
    row(
        &mut out,
        "fairness (Jain)",
        a.fairness.jain_index,
        b.fairness.jain_index,
        "",
        3,
    );
    let charged = |r: &Report| r.tenants.values().map(|t| t.charged_vcpu_hours).sum::<f64>();
    let borrowed = |r: &Report| r.tenants.values().map(|t| t.opportunistic_vcpu_hours).sum::<f64>();
    row(&mut out, "charged vCPU-hours", charged(a), charged(b), "", 1);
    row(
        &mut out,
        "borrowed vCPU-hours (not charged)",
        borrowed(a),
        borrowed(b),
        "",
        1,
    );
    let mut changes: Vec<(i64, String)> = a
        .tenants
        .iter()
        .filter_map(|(id, ta)| {
            let tb = b.tenants.get(id)?;
            let d = (tb.wait_p95_s - ta.wait_p95_s).abs() + (tb.denials - ta.denials).abs() * 60;
            (d > 0).then(|| {
                (
                    d,
                    format!(
                        "  {id:<20} wait p95 {:>6} s → {:>6} s   refused {:>4} → {:>4}   SLA missed {:>4} → {:>4}",
                        ta.wait_p95_s, tb.wait_p95_s, ta.denials, tb.denials, ta.sla_missed, tb.sla_missed
                    ),
                )
            })
        })
        .collect();
    changes.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    if !changes.is_empty() {
        let _ = writeln!(out, "\n  tenants that changed most:");
        for (_, line) in changes.iter().take(10) {
            let _ = writeln!(out, "{line}");
        }
    }
    let only = |x: &Report, y: &Report| x.tenants.keys().filter(|k| !y.tenants.contains_key(*k)).count();
    if only(a, b) + only(b, a) > 0 {
        let _ = writeln!(out, "\n  {} tenants only in A, {} only in B", only(a, b), only(b, a));
    }
    out
}
