//! `report.html`: one self-contained file (inline SVG and CSS, no scripts,
//! no network) with the charts a capacity planner looks at. The charts are
//! drawn here rather than with plotters: its text rendering needs system
//! fonts through font-kit, which a bare machine does not have, while SVG
//! `<text>` lets the browser use its own.

use crate::sim::report::{Report, WAIT_BUCKETS};
use std::fmt::Write;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const W: f64 = 860.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `n` intervals over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.0}", v)
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Horizontal grid lines and labels from `y0` to `y1` every `step`.
fn y_grid(svg: &mut String, (y0, y1, step): (f64, f64, f64), unit: &str, sy: &dyn Fn(f64) -> f64) {
    let mut y = y0;
    while y <= y1 + step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            sy(y) + 4.0,
            fmt_num(y),
            unit,
            py = sy(y)
        );
        y += step;
    }
}

/// A line chart of `series` over `x_hours`; `unit` follows y tick labels.
fn line_chart(title: &str, x_hours: &[f64], series: &[(String, Vec<f64>)], unit: &str) -> String {
    let mut svg = String::new();
    let x_max = x_hours.last().copied().unwrap_or(1.0).max(1e-9);
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let step = nice_step(hi - lo, 5.0);
    let (y0, y1) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    y_grid(&mut svg, (y0, y1, step), unit, &sy);
    let xstep = nice_step(x_max, 8.0).max(1.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}h</text>"##,
            TOP + ph,
            H - BOTTOM + 16.0,
            fmt_num(x),
            px = sx(x)
        );
        x += xstep;
    }
    for (i, (name, v)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = x_hours
            .iter()
            .zip(v)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/><rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            points.join(" "),
            W - RIGHT + 12.0,
            TOP + 18.0 * i as f64,
            W - RIGHT + 30.0,
            TOP + 10.0 + 18.0 * i as f64,
            esc(name)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#333"/><text x="{}" y="{}" text-anchor="middle">hours since start</text></svg></figure>"##,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 4.0
    );
    svg
}

/// A bar chart.
fn bar_chart(title: &str, labels: &[String], values: &[i64], unit: &str) -> String {
    let mut svg = String::new();
    let hi = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = nice_step(hi, 5.0).max(1.0);
    let y1 = (hi / step).ceil() * step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    y_grid(&mut svg, (0.0, y1, step), unit, &sy);
    let n = values.len().max(1) as f64;
    let bw = pw / n;
    let every = (values.len() / 16).max(1);
    for (i, (label, v)) in labels.iter().zip(values).enumerate() {
        let x = LEFT + i as f64 * bw;
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#1f77b4"><title>{}: {v}</title></rect>"##,
            x + bw * 0.1,
            sy(*v as f64),
            bw * 0.8,
            TOP + ph - sy(*v as f64),
            esc(label)
        );
        if i % every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bw / 2.0,
                H - BOTTOM + 16.0,
                esc(label)
            );
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

fn wait_label(le: Option<i64>, lower: i64) -> String {
    let f = |s: i64| {
        if s >= 3600 {
            format!("{}h", s / 3600)
        } else if s >= 60 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    };
    match le {
        Some(le) => format!("≤{}", f(le)),
        None => format!(">{}", f(lower)),
    }
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let hours: Vec<f64> = r.series.t_s.iter().map(|t| *t as f64 / 3600.0).collect();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>sparkcap simulate</h1><p>{} · seed {} · {} → {} UTC</p><pre>{}</pre>",
        esc(&r.trace),
        r.seed,
        r.start.format("%F %R"),
        r.end.format("%F %R"),
        esc(&r.summary())
    );
    let util: Vec<(String, Vec<f64>)> = r
        .pools
        .iter()
        .map(|(name, p)| (name.clone(), p.utilization.series.iter().map(|u| u * 100.0).collect()))
        .collect();
    body.push_str(&line_chart(
        "Utilisation per pool (requested cpu / allocatable)",
        &hours,
        &util,
        "%",
    ));
    let queue = vec![
        (
            "pods waiting".to_string(),
            r.series.queue_pods.iter().map(|v| *v as f64).collect(),
        ),
        (
            "drivers waiting".to_string(),
            r.series.queue_drivers.iter().map(|v| *v as f64).collect(),
        ),
        (
            "jobs running".to_string(),
            r.series.running_jobs.iter().map(|v| *v as f64).collect(),
        ),
    ];
    body.push_str(&line_chart("Queue length and running applications", &hours, &queue, ""));
    let labels: Vec<String> = hours.iter().map(|h| format!("{h:.1}h")).collect();
    body.push_str(&bar_chart(
        "Preemptions of borrowed capacity per sample interval",
        &labels,
        &r.series.preemptions,
        "",
    ));
    let balances: Vec<(String, Vec<f64>)> = r.series.balances.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    body.push_str(&line_chart(
        "vCPU-hours left, the ten busiest vCPU-hour tenants",
        &hours,
        &balances,
        "",
    ));
    let mut lower = 0;
    let mut wl = Vec::new();
    for (b, le) in r.jobs.wait_histogram.iter().zip(WAIT_BUCKETS) {
        wl.push(wait_label(b.le_s, lower));
        lower = le;
    }
    let wv: Vec<i64> = r.jobs.wait_histogram.iter().map(|b| b.count).collect();
    body.push_str(&bar_chart(
        "Driver wait (submission to bind): number of runs",
        &wl,
        &wv,
        "",
    ));
    body.push_str(
        "<h2>Tenants</h2><table><tr><th>tenant</th><th>units</th><th>vCPU-h bought</th><th>charged</th>\
         <th>borrowed</th><th>left</th><th>state</th><th>wait p50/p95 s</th><th>refused</th><th>SLA missed</th></tr>",
    );
    let mut rows: Vec<_> = r.tenants.iter().collect();
    rows.sort_by(|a, b| {
        b.1.charged_vcpu_hours
            .total_cmp(&a.1.charged_vcpu_hours)
            .then(a.0.cmp(b.0))
    });
    for (id, t) in rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            esc(id),
            t.dedicated_units,
            t.purchased_vcpu_hours,
            t.charged_vcpu_hours,
            t.opportunistic_vcpu_hours,
            t.balance_end_vcpu_hours,
            t.balance_state,
            t.wait_p50_s,
            t.wait_p95_s,
            t.denials,
            t.sla_missed
        );
    }
    body.push_str("</table>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparkcap simulate report</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:900px;color:#222}}\
         figure{{margin:2em 0}}figcaption{{font-weight:600;margin-bottom:.4em}}svg{{width:100%;height:auto}}\
         svg text{{font-size:11px;fill:#333}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}\
         table{{border-collapse:collapse;font-size:12px}}td,th{{border-bottom:1px solid #ddd;padding:2px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}</style></head><body>{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(24.0, 8.0), 5.0);
        assert_eq!(nice_step(0.7, 5.0), 0.2);
    }

    #[test]
    fn text_is_escaped() {
        let svg = line_chart("a <b> & c", &[0.0, 1.0], &[("x\"y".into(), vec![1.0, 2.0])], "%");
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("x&quot;y"));
        assert!(!svg.contains("<b>"));
    }
}
