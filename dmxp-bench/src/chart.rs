//! The chart: an SVG with throughput (1->1, every payload, every system) on top and one-way
//! latency p50 below, both on log scales, each row at its top-level placement (the report's
//! primary one, where the row kept a run).

use std::path::Path;

use plotters::prelude::*;

use crate::child::Res;
use crate::report::Report;
use crate::spec::{Mode, Shape, System};

const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

fn color(system: System) -> RGBColor {
    let index = System::ALL.iter().position(|s| *s == system).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// Bounds of a log axis that holds every value, with a margin.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.1, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    )
}

/// Draws `report` into an SVG file at `path`.
pub fn draw(report: &Report, path: &Path) -> Res<()> {
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(470);
    throughput_panel(report, &top)?;
    latency_panel(report, &bottom)?;
    root.present()?;
    Ok(())
}

fn throughput_panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> Res<()> {
    let rows: Vec<_> = report
        .throughput
        .iter()
        .filter(|r| r.shape == Shape::OneToOne)
        .collect();
    let mut payloads: Vec<usize> = rows
        .iter()
        .filter(|r| r.system != System::Floor)
        .map(|r| r.payload)
        .collect();
    payloads.sort_unstable();
    payloads.dedup();
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| rows.iter().any(|r| r.system == *s))
        .collect();
    let (lo, hi) = log_bounds(rows.iter().map(|r| r.msgs_per_sec / 1e6));
    let groups = payloads.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Throughput 1->1 across processes ({} placement, median, M msg/s, log scale)",
                report.placement.primary_or_near().name()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(payloads.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let group = (x - 0.5).round();
            if (x - 0.5 - group).abs() < 1e-6 && group >= 0.0 && (group as usize) < payloads.len() {
                format!("{} B", payloads[group as usize])
            } else {
                String::new()
            }
        })
        .y_desc("M msg/s")
        .draw()?;
    let width = 0.8 / systems.len().max(1) as f64;
    for (k, system) in systems.iter().enumerate() {
        let bars: Vec<(f64, f64)> = payloads
            .iter()
            .enumerate()
            .filter_map(|(g, payload)| {
                rows.iter()
                    .find(|r| {
                        r.system == *system && (r.payload == *payload || *system == System::Floor)
                    })
                    .map(|r| (g as f64 + 0.1 + k as f64 * width, r.msgs_per_sec / 1e6))
            })
            .collect();
        let fill = color(*system);
        chart
            .draw_series(bars.into_iter().map(move |(x, y)| {
                Rectangle::new([(x, lo), (x + width * 0.9, y.max(lo))], fill.filled())
            }))?
            .label(system.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn latency_panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> Res<()> {
    let payload = report
        .latency
        .iter()
        .find(|r| r.system != System::Floor)
        .map_or(32, |r| r.payload);
    let rows: Vec<_> = report
        .latency
        .iter()
        .filter(|r| r.payload == payload || r.system == System::Floor)
        .collect();
    let (lo, hi) = log_bounds(rows.iter().flat_map(|r| [r.p50_ns, r.p99_ns]));
    let n = rows.len().max(1);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.system.name(), r.mode.name()))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "One-way latency, ping-pong, {payload} B, {} placement (median p50 bar, p99 tick; ns, log scale)",
                report.placement.primary_or_near().name()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            let k = (x - 0.5).round();
            if (x - 0.5 - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
                labels[k as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11))
        .y_desc("ns")
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(k, r)| {
        let fill: RGBAColor = if r.mode == Mode::Spin {
            color(r.system).to_rgba()
        } else {
            color(r.system).mix(0.45)
        };
        Rectangle::new(
            [(k as f64 + 0.15, lo), (k as f64 + 0.85, r.p50_ns.max(lo))],
            fill.filled(),
        )
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(k, r)| {
        PathElement::new(
            vec![
                (k as f64 + 0.25, r.p99_ns.max(lo)),
                (k as f64 + 0.75, r.p99_ns.max(lo)),
            ],
            BLACK.stroke_width(2),
        )
    }))?;
    Ok(())
}
