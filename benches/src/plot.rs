//! SVG plots of many runs: throughput against subscribers, and latency percentiles against
//! offered rate, one series per server and transport.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::conn::BoxError;
use crate::report::RunReport;

type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn series_name(r: &RunReport) -> String {
    let t = match r.transport.as_str() {
        "websocket" => "WS",
        "long-polling" => "LP",
        o => o,
    };
    format!("{} {t}", r.server)
}

fn bounds(series: &Series, log_floor: f64) -> Option<((f64, f64), (f64, f64))> {
    let pts: Vec<&(f64, f64)> = series.values().flatten().collect();
    if pts.is_empty() {
        return None;
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        pts.iter()
            .map(|p| f(p))
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x0, x1) = fold(|p| p.0);
    let (y0, y1) = fold(|p| p.1);
    Some((
        ((x0 / 1.5).max(log_floor), x1 * 1.5),
        ((y0 / 2.0).max(log_floor), y1 * 2.0),
    ))
}

/// Draws `series` on log-log axes. Series whose name ends in `p50` are drawn thin and those
/// ending in `p99` thick, in the colour of their server and transport.
fn draw(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &Series,
) -> Result<bool, BoxError> {
    let Some(((x0, x1), (y0, y1))) = bounds(series, 1e-3) else {
        return Ok(false);
    };
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    // One colour per server and transport, whatever the percentile.
    let mut colours: Vec<String> = Vec::new();
    for (name, pts) in series {
        let base = name
            .trim_end_matches(" p50")
            .trim_end_matches(" p99")
            .to_owned();
        let i = colours.iter().position(|c| *c == base).unwrap_or_else(|| {
            colours.push(base.clone());
            colours.len() - 1
        });
        let colour = Palette99::pick(i).to_rgba();
        let width = if name.ends_with(" p50") { 1 } else { 3 };
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                colour.stroke_width(width),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
            });
        chart.draw_series(
            pts.iter()
                .map(|&p| Circle::new(p, 2 + width, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Writes the plots of `runs` into `dir`; returns the files written.
pub fn plots(runs: &[RunReport], dir: &Path) -> Result<Vec<String>, BoxError> {
    let mut written = Vec::new();
    let max_fanout: Vec<&RunReport> = runs
        .iter()
        .filter(|r| r.scenario == "fanout" && r.target_rate == 0.0)
        .collect();
    let mut thr = Series::new();
    let mut eff = Series::new();
    for r in &max_fanout {
        if let Some(d) = r.deliveries_per_s {
            thr.entry(series_name(r))
                .or_default()
                .push((r.sessions as f64, d));
        }
        if let Some(d) = r.deliveries_per_server_cpu_s {
            eff.entry(series_name(r))
                .or_default()
                .push((r.sessions as f64, d));
        }
    }
    let f = "throughput-vs-subscribers.svg";
    if draw(
        &dir.join(f),
        "Fan-out throughput (as fast as possible)",
        "subscribers",
        "deliveries / s",
        &thr,
    )? {
        written.push(f.to_owned());
    }
    let f = "efficiency-vs-subscribers.svg";
    if draw(
        &dir.join(f),
        "Fan-out efficiency",
        "subscribers",
        "deliveries per server CPU-second",
        &eff,
    )? {
        written.push(f.to_owned());
    }
    let mut lat = Series::new();
    for r in runs
        .iter()
        .filter(|r| r.scenario == "fanout" && r.target_rate > 0.0)
    {
        let (Some(l), Some(o)) = (r.latency_us, r.offered_deliveries_per_s) else {
            continue;
        };
        for (pname, v) in [("p50", l.p50), ("p99", l.p99)] {
            lat.entry(format!("{} {pname}", series_name(r)))
                .or_default()
                .push((o, v as f64 / 1000.0));
        }
    }
    let f = "latency-vs-rate.svg";
    if draw(
        &dir.join(f),
        "Fan-out latency against offered rate (thin: p50, thick: p99)",
        "offered deliveries / s",
        "latency, ms",
        &lat,
    )? {
        written.push(f.to_owned());
    }
    Ok(written)
}
