//! `poolscope sweep --report FILE`: the curves as one self-contained HTML
//! file (inline SVG and CSS, no script, nothing fetched), in the style of
//! the client's run picture: throughput with the knee and `cores × 2`
//! marked, latency and where it went, PostgreSQL's backends and lock
//! waiters, and the probe's latency — one small chart each, the limit on a
//! doubling axis — then the table and the recommendation.

use std::fmt::Write;

use super::render;
use super::stats::Step;
use super::SweepReport;

const W: f64 = 480.0;
const H: f64 = 260.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 42.0;
const BOTTOM: f64 = 40.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a chart: its name, colour and a value per step.
struct Line<'a> {
    name: &'a str,
    colour: &'a str,
    values: Vec<Option<f64>>,
}

/// A vertical marker at a limit: the knee, `cores × 2`.
struct Mark<'a> {
    /// Its name in `data-mark` (what the browser test looks for).
    key: &'a str,
    limit: u32,
    label: &'a str,
    colour: &'a str,
}

/// A chart of `lines` over the steps (evenly spaced: the limits double).
/// The drawing names what it is for the browser test, without changing how
/// it looks: `data-limits` on the chart, `data-line` on each line, and
/// `data-mark`/`data-limit` on each marker.
fn chart(title: &str, unit: &str, limits: &[u32], lines: &[Line], marks: &[Mark]) -> String {
    let n = limits.len().max(1);
    let top = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let x = |i: usize| {
        if n == 1 {
            (LEFT + W - RIGHT) / 2.0
        } else {
            LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| H - BOTTOM - (H - BOTTOM - TOP) * v / top;
    let floor = H - BOTTOM;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" data-limits="{l}"><text x="{LEFT}" y="18" font-size="14" font-weight="600">{t}</text><line x1="{LEFT}" y1="{floor}" x2="{r}" y2="{floor}" stroke="#bbb"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{floor}" stroke="#bbb"/>"##,
        t = escape(title),
        r = W - RIGHT,
        l = limits
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = top / 1.1 * frac;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="end">{}</text>"##,
            LEFT - 4.0,
            y(v) + 4.0,
            short(v)
        );
    }
    let mid = (TOP + floor) / 2.0;
    let _ = write!(
        svg,
        r##"<text x="10" y="{mid:.1}" font-size="11" fill="#555" transform="rotate(-90 10 {mid:.1})" text-anchor="middle">{}</text>"##,
        escape(unit)
    );
    for (i, limit) in limits.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">{limit}</text>"##,
            x(i),
            floor + 15.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">pool limit</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0
    );
    // Labels beside their line, on the inner side, one row each.
    for (k, mark) in marks.iter().enumerate() {
        if let Some(i) = limits.iter().position(|l| *l == mark.limit) {
            let (tx, anchor) = if x(i) > (LEFT + W - RIGHT) / 2.0 {
                (x(i) - 3.0, "end")
            } else {
                (x(i) + 3.0, "start")
            };
            let _ = write!(
                svg,
                r##"<line x1="{X:.1}" y1="{TOP}" x2="{X:.1}" y2="{floor}" stroke="{c}" stroke-dasharray="5 4" data-mark="{key}" data-limit="{limit}"/><text x="{tx:.1}" y="{:.1}" font-size="11" fill="{c}" text-anchor="{anchor}">{}</text>"##,
                TOP + 12.0 + 13.0 * k as f64,
                escape(mark.label),
                X = x(i),
                c = mark.colour,
                key = mark.key,
                limit = mark.limit,
            );
        }
    }
    for line in lines {
        let points: Vec<(f64, f64)> = line
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (x(i), y(v))))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" data-line="{}"/>"##,
            path.join(" "),
            escape(line.name),
            c = line.colour
        );
        for (px, py) in &points {
            let _ = write!(
                svg,
                r##"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{}"/>"##,
                line.colour
            );
        }
    }
    // The legend, under the title.
    let mut lx = LEFT;
    for line in lines {
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="24" width="10" height="10" fill="{c}"/><text x="{:.1}" y="33" font-size="11">{}</text>"##,
            lx + 13.0,
            escape(line.name),
            c = line.colour
        );
        lx += 24.0 + 6.5 * line.name.chars().count() as f64;
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn series(steps: &[Step], f: impl Fn(&Step) -> Option<f64>) -> Vec<Option<f64>> {
    steps.iter().map(f).collect()
}

/// The whole file.
pub fn html(r: &SweepReport) -> String {
    let limits: Vec<u32> = r.steps.iter().map(|s| s.limit).collect();
    let knee_label = r.knee.map(|k| format!("knee {k}"));
    let cores_label = r.cores_x2.map(|c| format!("cores × 2 = {c}"));
    let mut marks = Vec::new();
    if let (Some(limit), Some(label)) = (r.knee, &knee_label) {
        marks.push(Mark {
            key: "knee",
            limit,
            label,
            colour: "#1a7f37",
        });
    }
    if let (Some(limit), Some(label)) = (r.cores_x2, &cores_label) {
        marks.push(Mark {
            key: "cores-x2",
            limit,
            label,
            colour: "#6f42c1",
        });
    }
    let line = |name, colour, values| Line {
        name,
        colour,
        values,
    };
    let charts = [
        chart(
            "Throughput",
            "requests / s",
            &limits,
            &[line("req/s", "#1f5fbf", series(&r.steps, |s| Some(s.rps)))],
            &marks,
        ),
        chart(
            "Latency and where it went",
            "ms",
            &limits,
            &[
                line(
                    "p50",
                    "#1f5fbf",
                    series(&r.steps, |s| s.latency_ms.map(|l| l.p50)),
                ),
                line(
                    "p99",
                    "#9aa7b8",
                    series(&r.steps, |s| s.latency_ms.map(|l| l.p99)),
                ),
                line("pool wait", "#c25400", series(&r.steps, |s| s.pool_ms)),
                line("in db", "#c0152f", series(&r.steps, |s| s.db_ms)),
            ],
            &marks,
        ),
        chart(
            "PostgreSQL's backends",
            "backends",
            &limits,
            &[
                line("active", "#1f5fbf", series(&r.steps, |s| s.active)),
                line(
                    "waiting on a lock",
                    "#c0152f",
                    series(&r.steps, |s| s.lock_waiters),
                ),
            ],
            &marks,
        ),
        chart(
            "Another client's SELECT 1",
            "ms",
            &limits,
            &[line("probe", "#b35900", series(&r.steps, |s| s.probe_ms))],
            &marks,
        ),
    ];
    let mut table = render::header(r, &limits);
    for s in &r.steps {
        table.push_str(&render::row(s));
    }
    table.push_str(&render::conclusion(r));
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>poolscope sweep: work={work}</title>
<style>body{{font:16px/1.4 system-ui,sans-serif;color:#111;margin:20px;max-width:1040px}}
.charts{{display:grid;grid-template-columns:1fr 1fr;gap:12px}}svg{{width:100%;height:auto;border:1px solid #ddd;border-radius:6px}}
pre{{background:#f6f8fa;padding:12px;overflow:auto}}</style></head>
<body><h1>poolscope sweep: work={work}, {clients} clients</h1>
<p><strong>Recommendation:</strong> {rec}</p>
<div class="charts">{charts}</div>
<pre>{table}</pre>
</body></html>
"##,
        work = escape(&r.work),
        clients = r.clients,
        rec = escape(
            r.recommendation
                .as_deref()
                .unwrap_or("none (no step finished)")
        ),
        charts = charts.join(""),
        table = escape(&table),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_is_self_contained_and_marks_the_knee() {
        let mut r = crate::sweep::render::made_up(
            &[(1, 33.0), (2, 66.0), (4, 72.0), (8, 70.0)],
            8,
            Some(2),
        );
        render::conclude(&mut r);
        assert_eq!((r.knee, r.best), (Some(4), Some(4)));
        assert_eq!(
            r.comparison.as_deref(),
            Some("cores × 2 = 2 × 2 = 4: the knee is right there")
        );
        let page = html(&r);
        assert!(page.contains("knee 4") && page.contains("cores × 2 = 4"));
        assert!(!page.contains("<script") && !page.contains("src="));
        assert_eq!(page.matches("<svg").count(), 4);
    }
}
