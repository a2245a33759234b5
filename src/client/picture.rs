//! `--report FILE`: a picture of a finished run as one self-contained HTML
//! file (inline SVG and CSS, no script, nothing fetched): every answer as a
//! dot at its completion time, coloured by status and error kind, stacked
//! per an eighth of the sleep (at least 0.1 s), so each wave is a column of
//! its size; the expected waves drawn beside as dashed outlines; and the
//! summary text below.

use std::fmt::Write;

use super::burst::Outcome;
use super::render::summary_text;
use super::summary::Report;
use crate::contract::ErrorKind;

const W: f64 = 1000.0;
const H: f64 = 360.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 36.0;

fn colour(status: u16, kind: Option<ErrorKind>) -> &'static str {
    match (status, kind) {
        (200, _) => "#1a7f37",
        (_, Some(ErrorKind::DbRefused)) => "#c0152f",
        (_, Some(ErrorKind::PoolTimeout)) => "#b35900",
        (_, Some(ErrorKind::PoolerRefused | ErrorKind::PoolerTimeout)) => "#6f42c1",
        _ => "#444444",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole file.
pub fn html(report: &Report, outcomes: &[Outcome]) -> String {
    let mut answered: Vec<(f64, u16, Option<ErrorKind>)> = outcomes
        .iter()
        .filter_map(|o| {
            let r = o.result.as_ref().ok()?;
            Some((o.at, r.status, r.error_kind))
        })
        .collect();
    answered.sort_by(|a, b| a.0.total_cmp(&b.0));
    let expected: Vec<(u64, f64)> = report
        .expectation
        .as_ref()
        .map(|e| {
            e.prediction
                .expected_waves()
                .map(|w| (w.size, w.at_s))
                .collect()
        })
        .unwrap_or_default();
    let refused = report
        .expectation
        .as_ref()
        .map_or(0, |e| e.prediction.refused);
    let last = answered.last().map_or(0.0, |a| a.0);
    let span = [
        last * 1.05,
        expected.last().map_or(0.0, |w| w.1 * 1.15),
        1.0,
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / span;
    let floor = H - BOTTOM;

    // Stacked per column (an eighth of the sleep, at least 0.1 s): each wave
    // is one column of its size.
    let bucket = (report.sleep_seconds.unwrap_or(0.0) / 8.0).max(0.1);
    let column = |t: f64| (t / bucket).round() as i64;
    let mut columns = std::collections::HashMap::<i64, u64>::new();
    for (t, ..) in &answered {
        *columns.entry(column(*t)).or_default() += 1;
    }
    let tallest = columns
        .values()
        .copied()
        .chain(expected.iter().map(|w| w.0))
        .chain([refused, 1])
        .max()
        .unwrap_or(1) as f64;
    let r = ((floor - TOP) / tallest / 2.2).clamp(1.0, 4.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-labelledby="t"><title id="t">{} answers by completion time</title><line x1="{LEFT}" y1="{floor}" x2="{}" y2="{floor}" stroke="#bbb"/>"##,
        answered.len(),
        W - RIGHT
    );
    let step = if span > 60.0 {
        10.0
    } else if span > 20.0 {
        5.0
    } else if span > 8.0 {
        2.0
    } else {
        1.0
    };
    let mut s = 0.0;
    while s <= span {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="13" fill="#555" text-anchor="middle">{s}s</text>"##,
            x(s),
            floor + 18.0
        );
        s += step;
    }
    let mut stacked = std::collections::HashMap::<i64, u64>::new();
    for (t, status, kind) in &answered {
        let col = column(*t);
        let k = stacked.entry(col).or_default();
        *k += 1;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
            x(col as f64 * bucket) - r,
            floor - 2.0 * r * *k as f64,
            2.0 * r,
            2.0 * r - 0.5,
            colour(*status, *kind)
        );
    }
    for (size, at) in &expected {
        let h = (2.0 * r * *size as f64).min(floor - TOP);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="8" height="{h:.1}" fill="none" stroke="#111" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" font-size="13" fill="#111">{size}</text>"##,
            x(*at) + 2.0 * r + 3.0,
            floor - h,
            x(*at) + 2.0 * r + 1.0,
            floor - h - 4.0
        );
    }
    if refused > 0 {
        let h = (2.0 * r * refused as f64).min(floor - TOP);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="8" height="{h:.1}" fill="none" stroke="#c0152f" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" font-size="13" fill="#c0152f">{refused} refused</text>"##,
            x(0.0) + 12.0,
            floor - h,
            x(0.0) + 24.0,
            floor - h + 12.0
        );
    }
    svg.push_str("</svg>");

    let verdict = report.expectation.as_ref().map_or(
        "no expectation (the server's /pool could not be read)".to_owned(),
        |e| e.verdict.to_string(),
    );
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>poolscope run: {n} requests</title>
<style>body{{font:16px/1.4 system-ui,sans-serif;color:#111;margin:20px;max-width:1040px}}
pre{{background:#f6f8fa;padding:12px;overflow:auto}}.k{{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin:0 4px 0 12px}}</style></head>
<body><h1>poolscope run: {n} requests for {url}</h1>
<p><strong>Verdict:</strong> {verdict}</p>
{svg}
<p><span class="k" style="background:#1a7f37"></span>200<span class="k" style="background:#c0152f"></span>db_refused<span class="k" style="background:#b35900"></span>pool_timeout<span class="k" style="background:#6f42c1"></span>pooler_*<span class="k" style="background:#444"></span>other · dashed: expected waves</p>
<pre>{summary}</pre>
</body></html>
"##,
        n = report.requests,
        url = escape(&report.url),
        verdict = escape(&verdict),
        summary = escape(&summary_text(report)),
    )
}
