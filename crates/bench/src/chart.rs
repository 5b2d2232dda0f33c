//! Charts of a comparison, drawn as SVG with plotters (no font files: text is left to the
//! viewer as SVG `<text>`): one figure per label with a panel per figure of merit (throughput,
//! server CPU per 1,000, memory per session, latency percentiles), a bar per target, and one
//! figure of the push cost against the number of recipients when the reports hold flat-out push
//! runs at several sizes.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::error::BenchError;
use crate::report::{Report, last_of, number, targets_and_labels};

/// A figure's size in pixels, per panel.
const PANEL: (u32, u32) = (360, 320);

/// The height of a figure's title.
const TITLE: u32 = 36;

/// A bar panel: its title and how to read its value from a report.
struct Panel {
    title: &'static str,
    read: fn(&Report) -> Option<f64>,
}

const PANELS: &[Panel] = &[
    Panel {
        title: "per second (higher is better)",
        read: |r| r.per_second,
    },
    Panel {
        title: "server CPU-s per 1,000 (lower is better)",
        read: |r| r.cpu_s_per_1000,
    },
    Panel {
        title: "RSS per session, KiB (lower is better)",
        read: |r| r.rss_per_session_kib,
    },
];

/// The latency panel's points.
const PERCENTILES: [&str; 4] = ["p50", "p95", "p99", "max"];

/// Colours by target: herald first, then its peers, the same in every figure.
fn colour(index: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    COLOURS[index % COLOURS.len()]
}

/// An x axis of `n` categories (a discrete range includes its end).
fn segments(
    n: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.saturating_sub(1)).into_segmented()
}

/// A file name from a label: lowercase letters and digits, the rest one dash.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn failed(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |error| BenchError::Usage(format!("cannot draw {}: {error}", path.display()))
}

/// Draw the charts of `reports` into `dir` (created if missing); the files written, in order.
pub fn draw(reports: &[Report], dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir)?;
    let (targets, labels) = targets_and_labels(reports);
    let mut written = Vec::new();
    for label in labels {
        // The last report of each target under this label, in the targets' order.
        let runs: Vec<(usize, &Report)> = targets
            .iter()
            .enumerate()
            .filter_map(|(i, target)| last_of(reports, label, target).map(|r| (i, r)))
            .collect();
        let path = dir.join(format!("{}.svg", slug(label)));
        if label_figure(&path, label, &targets, &runs).map_err(failed(&path))? {
            written.push(path);
        }
    }
    let path = dir.join("push-scaling.svg");
    if scaling_figure(&path, reports, &targets).map_err(failed(&path))? {
        written.push(path);
    }
    Ok(written)
}

/// One label's figure; false (nothing written) if its reports have nothing to draw.
fn label_figure(
    path: &Path,
    label: &str,
    targets: &[&str],
    runs: &[(usize, &Report)],
) -> Result<bool, String> {
    let bars: Vec<&Panel> = PANELS
        .iter()
        .filter(|panel| runs.iter().any(|(_, r)| (panel.read)(r).is_some()))
        .collect();
    let latency = runs.iter().any(|(_, r)| r.latency_ms.is_some());
    let panels = bars.len() + usize::from(latency);
    if panels == 0 {
        return Ok(false);
    }
    let size = (PANEL.0 * panels as u32, PANEL.1 + TITLE);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(label, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels));
    for (area, panel) in areas.iter().zip(&bars) {
        let values: Vec<(usize, &str, f64)> = runs
            .iter()
            .filter_map(|(i, r)| (panel.read)(r).map(|v| (*i, targets[*i], v)))
            .collect();
        bar_panel(area, panel.title, &values)?;
    }
    if latency && let Some(area) = areas.get(bars.len()) {
        latency_panel(area, targets, runs)?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

/// Bars of `(colour index, name, value)`, each with its value written above it.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    values: &[(usize, &str, f64)],
) -> Result<(), String> {
    let top = values.iter().map(|v| v.2).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(segments(values.len()), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(values.len().max(1))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => values.get(*i).map(|v| v.1.to_owned()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| number(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(values.iter().enumerate().map(|(n, (i, _, value))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(n), 0.0),
                    (SegmentValue::Exact(n + 1), *value),
                ],
                colour(*i).filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(values.iter().enumerate().map(|(n, (_, _, value))| {
            Text::new(
                number(*value),
                (SegmentValue::CenterOf(n), *value + top * 0.02),
                ("sans-serif", 12).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Latency percentiles (ms, on a log scale): a line per target through p50, p95, p99, max.
fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    targets: &[&str],
    runs: &[(usize, &Report)],
) -> Result<(), String> {
    let lines: Vec<(usize, [f64; 4])> = runs
        .iter()
        .filter_map(|(i, r)| r.latency_ms.map(|l| (*i, [l.p50, l.p95, l.p99, l.max])))
        .collect();
    let all = lines.iter().flat_map(|(_, points)| points.iter().copied());
    let low = all.clone().fold(f64::INFINITY, f64::min).max(0.001);
    let high = all.fold(0.0, f64::max).max(low * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("latency, ms (log scale)", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(
            segments(PERCENTILES.len()),
            // Headroom above the highest line for the legend (upper left).
            (low / 2.0..high * 40.0).log_scale(),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => PERCENTILES.get(*i).copied().unwrap_or("").to_owned(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| number(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, points) in &lines {
        let style = colour(*i);
        let at = |(n, v): (usize, &f64)| (SegmentValue::CenterOf(n), *v);
        chart
            .draw_series(LineSeries::new(
                points.iter().enumerate().map(at),
                style.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(targets[*i])
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], style.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .enumerate()
                    .map(|point| Circle::new(at(point), 3, style.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A flat-out push run of the scaling figure: (recipients, per second, CPU-s per 1,000).
type Point = (f64, f64, f64);

/// A panel of the scaling figure: its title and the value it draws of a point.
type ScalingPanel = (&'static str, fn(&Point) -> f64);

/// A line of the scaling figure: a target with a number of registrations per recipient.
struct Series {
    colour: usize,
    name: String,
    /// Several registrations per recipient: drawn dashed.
    dashed: bool,
    points: Vec<Point>,
}

/// The cost of a push against the number of recipients: flat-out push runs grouped by target
/// and registrations per recipient, drawn if some group has runs at two sizes or more.
fn scaling_figure(path: &Path, reports: &[Report], targets: &[&str]) -> Result<bool, String> {
    let mut series: Vec<Series> = Vec::new();
    for report in reports {
        let (Some(users), Some(per_second), Some(cpu), None) = (
            report.users,
            report.per_second,
            report.cpu_s_per_1000,
            report.rate_target,
        ) else {
            continue;
        };
        if report.scenario != "push" {
            continue;
        }
        let index = targets
            .iter()
            .position(|t| *t == report.target)
            .unwrap_or(0);
        let name = match report.registrations {
            Some(n) if n > 1 => format!("{}, {n} registrations", report.target),
            _ => report.target.clone(),
        };
        let point = (users as f64, per_second, cpu);
        match series.iter_mut().find(|line| line.name == name) {
            Some(line) => line.points.push(point),
            None => series.push(Series {
                colour: index,
                dashed: report.registrations.is_some_and(|n| n > 1),
                name,
                points: vec![point],
            }),
        }
    }
    for line in &mut series {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        line.points.dedup_by(|a, b| a.0 == b.0);
    }
    series.retain(|line| line.points.len() >= 2);
    if series.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (PANEL.0 * 2 + 80, PANEL.1 + TITLE)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled("push, flat out, by recipients", ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, 2));
    let points = || series.iter().flat_map(|line| line.points.iter());
    let (low, high) = points().fold((f64::INFINITY, 0.0f64), |(l, h), p| {
        (l.min(p.0), h.max(p.0))
    });
    let panels: [ScalingPanel; 2] = [
        ("publishes per second", |p| p.1),
        ("server CPU-s per 1,000 publishes", |p| p.2),
    ];
    for (area, (title, read)) in areas.iter().zip(panels) {
        let top = points().map(read).fold(0.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d((low / 1.5..high * 1.5).log_scale(), 0.0..top.max(0.001))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("recipients (log scale)")
            .x_label_formatter(&|x| number(*x))
            .y_label_formatter(&|y| number(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for Series {
            colour: i,
            name,
            dashed,
            points,
        } in &series
        {
            let style = colour(*i);
            let line = points.iter().map(|p| (p.0, read(p)));
            let drawn = if *dashed {
                chart.draw_series(DashedLineSeries::new(line, 6, 4, style.stroke_width(2)))
            } else {
                chart.draw_series(LineSeries::new(line, style.stroke_width(2)))
            };
            let dashed = *dashed;
            drawn
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    let (dash, gap) = if dashed { (4, 3) } else { (16, 1) };
                    plotters::element::DashedPathElement::new(
                        vec![(x, y), (x + 16, y)],
                        dash,
                        gap,
                        style.stroke_width(2),
                    )
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0, read(p)), 3, style.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Latency;

    /// The texts an SVG file shows (the contents of its `<text>` elements, trimmed).
    fn texts(path: &Path) -> Vec<String> {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        svg.split("<text")
            .skip(1)
            .filter_map(|part| {
                let (_, rest) = part.split_once('>')?;
                let (text, _) = rest.split_once("</text>")?;
                Some(text.trim().to_owned())
            })
            .collect()
    }

    fn push(target: &str, label: &str, users: usize, per_second: f64, cpu: f64) -> Report {
        Report {
            users: Some(users),
            per_second: Some(per_second),
            cpu_s_per_1000: Some(cpu),
            latency_ms: Some(Latency {
                p50: 0.4,
                p95: 1.2,
                p99: 3.5,
                max: 40.0,
            }),
            ..Report::new("push", target, Some(label))
        }
    }

    #[test]
    fn each_label_gets_a_figure_with_every_target_and_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let reports = [
            push("herald", "push, flat out", 1000, 3937.0, 0.3),
            push("prosody", "push, flat out", 1000, 651.0, 1.61),
            push("ejabberd", "push, flat out", 1000, 1897.0, 0.83),
            Report {
                rss_per_session_kib: Some(29.0),
                ..Report::new("idle", "herald", None)
            },
        ];
        let written = draw(&reports, dir.path()).unwrap();
        assert_eq!(
            written,
            [
                dir.path().join("push-flat-out.svg"),
                dir.path().join("idle.svg")
            ]
        );
        let shown = texts(&written[0]);
        for text in [
            "push, flat out",
            "herald",
            "prosody",
            "ejabberd",
            "3937",
            "651",
            "1.61",
            "p99",
        ] {
            assert!(shown.iter().any(|t| t == text), "{text} missing: {shown:?}");
        }
        let idle = texts(&written[1]);
        assert!(idle.iter().any(|t| t == "29"), "{idle:?}");
        assert!(!idle.iter().any(|t| t == "p99"), "{idle:?}");
    }

    #[test]
    fn a_label_with_nothing_to_draw_gets_no_figure() {
        let dir = tempfile::tempdir().unwrap();
        let written = draw(&[Report::new("enable", "herald", None)], dir.path()).unwrap();
        assert!(written.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn flat_out_push_runs_at_several_sizes_draw_the_scaling_figure() {
        let dir = tempfile::tempdir().unwrap();
        let mut four = push(
            "herald",
            "push, 10000 recipients, 4 each",
            10_000,
            2500.0,
            0.5,
        );
        four.registrations = Some(4);
        let mut four_small = push(
            "herald",
            "push, 1000 recipients, 4 each",
            1000,
            2900.0,
            0.45,
        );
        four_small.registrations = Some(4);
        let mut paced = push("herald", "push at 1500/s", 100_000, 1500.0, 0.4);
        paced.rate_target = Some(1500.0);
        let reports = [
            push("herald", "push, 1000 recipients", 1000, 3900.0, 0.3),
            push("herald", "push, 10000 recipients", 10_000, 3500.0, 0.33),
            push("herald", "push, 100000 recipients", 100_000, 3000.0, 0.38),
            four,
            four_small,
            paced,
        ];
        let written = draw(&reports, dir.path()).unwrap();
        let scaling = dir.path().join("push-scaling.svg");
        assert_eq!(written.last(), Some(&scaling));
        let shown = texts(&scaling);
        for text in [
            "herald",
            "herald, 4 registrations",
            "recipients (log scale)",
        ] {
            assert!(shown.iter().any(|t| t == text), "{text} missing: {shown:?}");
        }

        // One size only: no scaling figure.
        let dir = tempfile::tempdir().unwrap();
        let written = draw(&reports[..1], dir.path()).unwrap();
        assert!(!written.contains(&dir.path().join("push-scaling.svg")));
    }

    #[test]
    fn labels_become_plain_file_names() {
        assert_eq!(slug("push at 1500/s, round 2"), "push-at-1500-s-round-2");
        assert_eq!(slug("idle"), "idle");
    }
}
