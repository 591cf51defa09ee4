//! The bench's SVG chart: the latency rows as grouped bars, one group per row, one bar per lane.
//!
//! Why a chart next to the table: the three lanes differ by orders of magnitude (guest-poll pays a
//! 4 ms timer, guest-push a few µs over host), which a log-scale bar chart shows at a glance and a
//! table of numbers does not. The bar is the p50, the whisker above it the p99. Rows without a
//! latency (throughput, wake-ups, CPU) are not on this chart; the table and the JSON carry them.
//! plotters is built with its SVG backend only (no font-kit / ttf): text is emitted as SVG
//! `<text>` and laid out by the viewer, with plotters' crude width estimate used for spacing.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::result::{RowResult, LANES};

/// The smallest chart; it grows wider with the row count ([`GROUP_PX`] per row) so that,
/// with the `*_ext` rows and `scale_10k`, bars stay wide and row names fit level.
const SIZE: (u32, u32) = (1000, 500);
const GROUP_PX: u32 = 124;
/// host, guest-poll, guest-push, then any later lanes (e.g. Node) in order of appearance.
const PALETTE: [u32; 6] = [0x4c72b0, 0xdd8452, 0x55a868, 0xc44e52, 0x8172b3, 0x937860];
const FONT: &str = "sans-serif";
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

struct Bar {
    group: usize,
    lane: usize,
    p50: f64,
    p99: Option<f64>,
}

/// Writes the chart of `rows` (see [`render_svg_string`]) to `path`.
pub fn render_svg(rows: &[RowResult], title: &str, path: &Path) -> Result<()> {
    let svg = render_svg_string(rows, title)?;
    std::fs::write(path, svg).with_context(|| format!("writing SVG chart {}", path.display()))
}

/// Renders the latency rows (those with a p50) as grouped bars: one group per row, one bar per
/// lane (host, guest-poll, guest-push, in that order, each its own colour, with a legend), on a
/// log-scale µs axis; bar = p50, whisker = p99. Rows without a p50 are skipped; a lane missing
/// from a row leaves a gap in its group.
pub fn render_svg_string(rows: &[RowResult], title: &str) -> Result<String> {
    let (mut groups, mut lanes, mut bars) = (Vec::new(), LANES.to_vec(), Vec::new());
    for r in rows {
        let Some(p50) = positive(r.p50_us) else {
            continue;
        };
        let group = index_or_push(&mut groups, &r.row);
        let (lane, p99) = (index_or_push(&mut lanes, &r.lane), positive(r.p99_us));
        bars.push(Bar {
            group,
            lane,
            p50,
            p99,
        });
    }
    let size = (SIZE.0.max(100 + GROUP_PX * groups.len() as u32), SIZE.1);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(60);
        let caption = format!("{title} — latency, µs (log scale)");
        let centred =
            TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        head.draw(&Text::new(caption, (size.0 as i32 / 2, 8), centred))?;
        if bars.is_empty() {
            body.draw(&Text::new("no latency rows", (20, 20), (FONT, 16)))?;
        } else {
            draw_legend(&head, &lanes)?;
            draw_chart(&body, &groups, &lanes, &bars)?;
        }
        root.present()?;
    }
    Ok(out)
}

fn draw_chart(root: &Area<'_>, groups: &[&str], lanes: &[&str], bars: &[Bar]) -> Result<()> {
    // Axis from a decade strictly below the smallest p50 (at most 1 µs, so runs compare) to a
    // decade strictly above the largest p99.
    let min = bars.iter().map(|b| b.p50).fold(f64::INFINITY, f64::min);
    let max = bars.iter().map(|b| b.p99.unwrap_or(b.p50).max(b.p50));
    let max = max.fold(0.0, f64::max);
    let lo_exp = ((min.log10().ceil() as i32) - 1).min(0);
    let hi_exp = (max.log10().floor() as i32) + 1;
    let (lo, hi) = (10f64.powi(lo_exp), 10f64.powi(hi_exp));
    let decades: Vec<f64> = (lo_exp..=hi_exp).map(|e| 10f64.powi(e)).collect();
    let minor = decades
        .iter()
        .flat_map(|d| (2..10).map(move |k| d * f64::from(k)));
    let minor: Vec<f64> = minor.filter(|v| *v < hi).collect();
    let y = (lo..hi)
        .log_scale()
        .with_key_points(decades)
        .with_light_points(minor);

    // Row names horizontally when they fit under their group, else rotated to read downwards.
    let n = groups.len();
    let label_px = groups.iter().map(|g| text_px(g)).max().unwrap_or(0);
    let rotate = label_px + 10 > (root.dim_in_pixel().0 as i32 - 100) / n as i32;
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(if rotate { label_px + 16 } else { 30 })
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..n as f64, y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| fmt_us(*v))
        .y_desc("latency (µs, log scale)")
        .label_style((FONT, 15))
        .draw()?;

    let slot = 0.8 / lanes.len() as f64;
    let centre = |b: &Bar| b.group as f64 + 0.1 + slot * (b.lane as f64 + 0.5);
    for j in 0..lanes.len() {
        let lane_bars = bars.iter().filter(|b| b.lane == j);
        chart.draw_series(lane_bars.map(|b| {
            let (x, w) = (centre(b), slot * 0.42);
            Rectangle::new([(x - w, lo), (x + w, b.p50)], colour(j).filled())
        }))?;
    }
    chart.draw_series(bars.iter().filter_map(|b| {
        let p99 = b.p99.filter(|p| *p > b.p50)?;
        let (x, w) = (centre(b), slot * 0.2);
        let points = vec![(x, b.p50), (x, p99), (x - w, p99), (x + w, p99)];
        Some(PathElement::new(points, BLACK.stroke_width(2)))
    }))?;

    let (turn, anchor) = match rotate {
        true => (FontTransform::Rotate90, Pos::new(HPos::Left, VPos::Center)),
        false => (FontTransform::None, Pos::new(HPos::Center, VPos::Top)),
    };
    let style = TextStyle::from((FONT, 15).into_font())
        .transform(turn)
        .pos(anchor);
    let (bx, by) = root.get_base_pixel();
    for (i, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        let at = (px - bx, py - by + 8);
        root.draw(&Text::new(name.to_string(), at, style.clone()))?;
    }
    Ok(())
}

/// One line above the plot, so the legend never hides a bar or whisker.
fn draw_legend(head: &Area<'_>, lanes: &[&str]) -> Result<()> {
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (y, mut x) = (46, 90);
    for (j, lane) in lanes.iter().enumerate() {
        let swatch = Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour(j).filled());
        head.draw(&swatch)?;
        head.draw(&Text::new(lane.to_string(), (x + 20, y), style.clone()))?;
        x += 44 + text_px(lane);
    }
    let whisker = PathElement::new(vec![(x + 7, y - 7), (x + 7, y + 7)], BLACK.stroke_width(2));
    head.draw(&whisker)?;
    head.draw(&Text::new("p99 (bar: p50)", (x + 20, y), style))?;
    Ok(())
}

fn colour(lane: usize) -> RGBColor {
    let c = PALETTE[lane % PALETTE.len()];
    RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// Rough width of a 15-px label (SVG text is measured by the viewer, not here).
fn text_px(s: &str) -> i32 {
    s.chars().count() as i32 * 13 / 2
}

fn positive(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v > 0.0)
}

fn index_or_push<'a>(list: &mut Vec<&'a str>, item: &'a str) -> usize {
    list.iter().position(|x| *x == item).unwrap_or_else(|| {
        list.push(item);
        list.len() - 1
    })
}

fn fmt_us(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{} s", v / 1e6),
        v if v >= 1e3 => format!("{} ms", v / 1e3),
        v => format!("{v} µs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(row: &str, lane: &str, p50: Option<f64>, p99: Option<f64>) -> RowResult {
        let (row, lane, samples) = (row.into(), lane.into(), 1000);
        RowResult {
            row,
            lane,
            samples,
            p50_us: p50,
            p99_us: p99,
            ..Default::default()
        }
    }

    fn rows() -> Vec<RowResult> {
        vec![
            row("udp_echo_small", "host", Some(8.0), Some(20.0)),
            row("udp_echo_small", "guest-poll", Some(4100.0), Some(8300.0)),
            row("udp_echo_small", "guest-push", Some(12.0), Some(40.0)),
            row("http_loopback_get", "host", Some(30.0), Some(90.0)),
            row("http_loopback_get", "guest-push", Some(45.0), Some(51000.0)),
            // Non-latency rows (gib_per_s, wakeups_per_s, ...): no p50.
            row("tcp_bulk", "host", None, None),
            row("idle_wakeups", "guest-push", None, None),
        ]
    }

    #[test]
    fn svg_names_every_latency_row_and_lane() {
        let svg = render_svg_string(&rows(), "differential bench").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let rows_and_title = ["udp_echo_small", "http_loopback_get", "differential bench"];
        for name in rows_and_title.into_iter().chain(LANES) {
            assert!(svg.contains(name), "missing {name}");
        }
        // 5 bars + 3 legend swatches (+ background); the 5 whiskers are polylines.
        assert!(svg.matches("<rect").count() >= 5 + 3);
        assert!(svg.matches("<polyline").count() >= 5);
        // Axis from 1 µs up to the decade above the 51 ms p99.
        assert!(svg.contains("1 µs") && svg.contains("100 ms"));
    }

    #[test]
    fn svg_grows_with_the_rows_and_keeps_names_level() {
        let names = [
            "pipe_rtt",
            "udp_echo_small",
            "unix_echo_small",
            "unix_accept",
            "tcp_echo_64k",
            "http_loopback_get",
            "udp_echo_ext",
            "tcp_echo_ext",
            "http_get_ext",
            "scale_10k",
        ];
        let rows: Vec<RowResult> = names
            .iter()
            .flat_map(|name| {
                LANES
                    .into_iter()
                    .map(move |lane| row(name, lane, Some(50.0), Some(200.0)))
            })
            .collect();
        let svg = render_svg_string(&rows, "t").unwrap();
        assert!(svg.contains(&format!("width=\"{}\"", 100 + GROUP_PX * 10)));
        assert!(!svg.contains("rotate(90"), "row names rotated");
        assert!(names.iter().all(|name| svg.contains(name)));
    }

    #[test]
    fn svg_skips_rows_without_latency() {
        let svg = render_svg_string(&rows(), "t").unwrap();
        assert!(!svg.contains("tcp_bulk") && !svg.contains("idle_wakeups"));
        let other: Vec<_> = rows().into_iter().skip(5).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.svg");
        render_svg(&other, "t", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("no latency rows") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("tcp_bulk"));
    }
}
