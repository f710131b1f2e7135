//! The bench's plots, drawn with plotters into an RGB buffer and written as PNG: the rule
//! count on a log axis; the value axis logarithmic where the values span a decade or more
//! (a 100× collapse stays visible), linear from zero otherwise; a marker of its own on
//! every series, so series that lie on one another both show; the legend beside the plot,
//! never over the data. Text is DejaVu Sans, bundled (the `dejavu` crate): no system font
//! library is needed.

use plotters::{
    coord::{
        Shift,
        ranged1d::{AsRangedCoord, ValueFormatter},
    },
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::results::{FloodScale, Frame, Policy, Program, Receiver, Results, thousands};

/// Image size, px.
const W: u32 = 1000;
const H: u32 = 560;
/// Width of the plot (with its axes); the legend takes the rest, to the right.
pub const PLOT_W: u32 = 700;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Marker {
    /// Filled circle.
    Dot,
    /// Hollow circle, larger than the others: what lies under it shows through.
    Ring,
    Triangle,
    Square,
    Diamond,
    Cross,
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub marker: Marker,
    pub dashed: bool,
    /// (x, y), x and y > 0.
    pub points: Vec<(f64, f64)>,
}

/// A chart: x is a rule count (log axis).
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The value axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// From 0.
    Linear,
    /// Decades.
    Log,
}

/// Log where the values span a decade or more.
pub fn scale(series: &[Series]) -> Scale {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if hi / lo >= 10.0 { Scale::Log } else { Scale::Linear }
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(80, 80, 80);

/// Per-packet cost against the rule count: ps-agent's three frames, the floor, xdp-filter.
pub fn cost_chart(r: &Results) -> Chart {
    let sizes = r.scale_sizes();
    let points = |program: &Program, frame: Frame| -> Vec<(f64, f64)> {
        sizes.iter().filter_map(|&n| r.ns(program, Policy::Rules(n), frame).map(|v| (n as f64, v))).collect()
    };
    let styles = [(BLUE_, Marker::Dot), (RED_, Marker::Triangle), (GREEN_, Marker::Square)];
    let mut series: Vec<Series> = Frame::SCALE
        .iter()
        .zip(styles)
        .map(|(&f, (color, marker))| Series {
            label: format!("ps-agent, {}", f.label()),
            color,
            marker,
            dashed: false,
            points: points(&Program::PsAgent, f),
        })
        .collect();
    if let Some(floor) = r.ns(&Program::Floor, Policy::Matrix, Frame::Ipv4Allowed) {
        series.push(Series {
            label: "Floor (XDP_PASS), IPv4 allowed".into(),
            color: GREY,
            marker: Marker::Cross,
            dashed: true,
            points: sizes.iter().map(|&n| (n as f64, floor)).collect(),
        });
    }
    series.push(Series {
        label: "xdp-filter, IPv4 allowed".into(),
        color: ORANGE,
        marker: Marker::Diamond,
        dashed: false,
        points: points(&Program::XdpFilter, Frame::Ipv4Allowed),
    });
    series.retain(|s| !s.points.is_empty());
    Chart {
        title: "Per-packet cost of ps_xdp vs rule count (BPF_PROG_TEST_RUN)".into(),
        x_label: "Rules (log scale)".into(),
        y_label: "ns per packet (median)".into(),
        series,
    }
}

/// The UDP flood dropped against the rule count, per receiver.
pub fn flood_chart(r: &Results) -> Chart {
    let style = |rx: Receiver| match rx {
        Receiver::PsAgent => (BLUE_, Marker::Dot, false),
        // nftables and iptables walk the same rules at the same speed: the ring and the
        // dashes keep the one drawn first visible under the other.
        Receiver::NftablesInput => (RED_, Marker::Ring, true),
        Receiver::Iptables => (GREEN_, Marker::Triangle, false),
        _ => (GREY, Marker::Square, false),
    };
    let series = r
        .flood_scale
        .iter()
        .map(|s: &FloodScale| {
            let (color, marker, dashed) = style(s.receiver);
            Series {
                label: s.receiver.label().into(),
                color,
                marker,
                dashed,
                points: s.points.iter().map(|p| (p.rules as f64, p.mpps())).collect(),
            }
        })
        .collect();
    Chart {
        title: "UDP flood dropped vs rule count (live frames)".into(),
        x_label: "Rules (log scale)".into(),
        y_label: "Mpps dropped, by CPU time".into(),
        series,
    }
}

/// Make DejaVu Sans the "sans-serif" family (once).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_err() {
            panic!("the bundled DejaVu Sans is not a font plotters can read");
        }
    });
}

/// The chart as RGB pixels, `W` × `H`.
pub fn render_rgb(chart: &Chart) -> Vec<u8> {
    register_font();
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        let (plot, legend) = root.split_horizontally(PLOT_W);
        draw_plot(&plot, chart).unwrap_or_else(|e| panic!("failed to draw `{}`: {e}", chart.title));
        draw_legend(&legend, chart).unwrap_or_else(|e| panic!("failed to draw the legend of `{}`: {e}", chart.title));
        root.present().expect("bitmap in memory");
    }
    buf
}

/// The chart as PNG.
pub fn render_png(chart: &Chart) -> Vec<u8> {
    use image::ImageEncoder as _;
    let rgb = render_rgb(chart);
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, W, H, image::ExtendedColorType::Rgb8)
        .expect("PNG of an RGB buffer");
    png
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

/// The value axis: (from, to, ticks). Log: whole decades around the values; linear: from
/// 0 to 15% over the largest value (plotters picks the ticks).
fn value_axis(chart: &Chart, scale: Scale) -> (f64, f64, Vec<f64>) {
    let ys = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    match scale {
        Scale::Log => {
            let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
            let b = b.max(a + 1);
            (10f64.powi(a), 10f64.powi(b), (a..=b).map(|e| 10f64.powi(e)).collect())
        }
        Scale::Linear => (0.0, hi * 1.15, vec![]),
    }
}

/// A value axis label: thousands separated, small values with the digits they need.
fn value_label(v: f64) -> String {
    if v >= 1.0 { thousands(v.round() as u64) } else { format!("{}", (v * 1e6).round() / 1e6) }
}

fn draw_plot(area: &Area, chart: &Chart) -> DrawResult {
    let scale = scale(&chart.series);
    let (y0, y1, y_ticks) = value_axis(chart, scale);
    match scale {
        Scale::Log => draw_on(area, chart, (y0..y1).log_scale().with_key_points(y_ticks), "(log scale)"),
        Scale::Linear => draw_on(area, chart, y0..y1, ""),
    }
}

/// The plot with `y` as its value axis (`y_note` after the axis label).
fn draw_on<Y>(area: &Area, chart: &Chart, y: Y, y_note: &str) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut xs: Vec<f64> = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (lo, hi) = (xs.first().copied().unwrap_or(1.0), xs.last().copied().unwrap_or(10.0));
    let x = (lo / 1.6..hi * 1.6).log_scale().with_key_points(xs);
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    let x_fmt = |v: &f64| thousands(v.round() as u64);
    let y_fmt = |v: &f64| value_label(*v);
    c.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(format!("{} {y_note}", chart.y_label).trim_end())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(WHITE)
        .draw()?;
    let pts = |s: &Series| -> Vec<(f64, f64)> { s.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect() };
    // Solid lines first, dashed ones over them (the solid one shows in the gaps), then every
    // marker over the lines, rings before the rest (a smaller marker shows inside a ring).
    for s in chart.series.iter().filter(|s| !s.dashed) {
        c.draw_series(LineSeries::new(pts(s), s.color.stroke_width(2)))?;
    }
    for s in chart.series.iter().filter(|s| s.dashed) {
        c.draw_series(DashedLineSeries::new(pts(s), 8, 6, s.color.stroke_width(2)))?;
    }
    let rings = chart.series.iter().filter(|s| s.marker == Marker::Ring);
    for s in rings.chain(chart.series.iter().filter(|s| s.marker != Marker::Ring)) {
        markers(&mut c, &pts(s), s.marker, s.color)?;
    }
    Ok(())
}

/// The legend, in its own area: a line, the marker and the label of each series, top down
/// (coordinates: 0 to 100 both ways, y up).
fn draw_legend(area: &Area, chart: &Chart) -> DrawResult {
    let mut c = ChartBuilder::on(area).margin_top(60).build_cartesian_2d(0f64..100f64, 0f64..100f64)?;
    let font = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in chart.series.iter().enumerate() {
        let y = 95.0 - 7.0 * i as f64;
        let line = vec![(2.0, y), (14.0, y)];
        if s.dashed {
            c.draw_series(DashedLineSeries::new(line, 8, 6, s.color.stroke_width(2)))?;
        } else {
            c.draw_series(LineSeries::new(line, s.color.stroke_width(2)))?;
        }
        markers(&mut c, &[(8.0, y)], s.marker, s.color)?;
        let text = Text::new(s.label.clone(), (17.0, y), font.clone());
        c.draw_series(std::iter::once(text))?;
    }
    Ok(())
}

/// Marker `m` of `color` at each of `points`.
fn markers<DB: DrawingBackend, X, Y>(
    c: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: &[(f64, f64)],
    m: Marker,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let (fill, stroke) = (color.filled(), color.stroke_width(2));
    let at = points.iter().copied();
    match m {
        Marker::Dot => c.draw_series(at.map(|p| Circle::new(p, 4, fill))).map(drop),
        Marker::Ring => c.draw_series(at.map(|p| Circle::new(p, 8, stroke))).map(drop),
        Marker::Triangle => c.draw_series(at.map(|p| TriangleMarker::new(p, 6, fill))).map(drop),
        Marker::Square => {
            c.draw_series(at.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], fill))).map(drop)
        }
        Marker::Diamond => c
            .draw_series(at.map(|p| EmptyElement::at(p) + Polygon::new(vec![(0, -6), (6, 0), (0, 6), (-6, 0)], fill)))
            .map(drop),
        Marker::Cross => c.draw_series(at.map(|p| Cross::new(p, 5, stroke))).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, color: RGBColor, marker: Marker, dashed: bool, ys: &[f64]) -> Series {
        let xs = [30.0, 1_000.0, 10_000.0];
        Series {
            label: label.into(),
            color,
            marker,
            dashed,
            points: xs.iter().copied().zip(ys.iter().copied()).collect(),
        }
    }

    /// Pixels of `color` in the plot (left of the legend).
    fn pixels(rgb: &[u8], color: RGBColor) -> usize {
        rgb.chunks(3)
            .enumerate()
            .filter(|(i, px)| (*i as u32 % W) < PLOT_W && px[0] == color.0 && px[1] == color.1 && px[2] == color.2)
            .count()
    }

    #[test]
    fn a_log_axis_where_values_span_decades() {
        // The flood: 6.9 Mpps through ps-agent, 0.007 through nftables at 10,000 rules.
        let flood = [
            series("ps", BLUE_, Marker::Dot, false, &[6.87, 6.60, 6.59]),
            series("nft", RED_, Marker::Ring, true, &[0.753, 0.069, 0.007]),
        ];
        assert_eq!(scale(&flood), Scale::Log);
        let chart =
            Chart { title: String::new(), x_label: String::new(), y_label: String::new(), series: flood.into() };
        let (lo, hi, ticks) = value_axis(&chart, Scale::Log);
        assert_eq!((lo, hi), (0.001, 10.0), "whole decades around 0.007 and 6.87");
        assert_eq!(ticks, [0.001, 0.01, 0.1, 1.0, 10.0]);
        // The per-packet cost: 15 to 115 ns.
        let cost = [
            series("ps", BLUE_, Marker::Dot, false, &[45.1, 44.3, 44.1]),
            series("xf", ORANGE, Marker::Diamond, false, &[100.1, 102.6, 115.0]),
        ];
        assert_eq!(scale(&cost), Scale::Linear);
        assert_eq!(value_label(0.01), "0.01");
        assert_eq!(value_label(1_000.0), "1,000");
    }

    /// nftables and iptables drop at the same rate: both series must show, and every
    /// series' colour must appear in the plot itself (markers and lines), not only in the
    /// legend.
    #[test]
    fn series_on_one_another_stay_visible() {
        let same = [0.753, 0.069, 0.007];
        let chart = Chart {
            title: "UDP flood dropped vs rule count".into(),
            x_label: "Rules (log scale)".into(),
            y_label: "Mpps".into(),
            series: vec![
                series("ps-agent", BLUE_, Marker::Dot, false, &[6.87, 6.60, 6.59]),
                series("nftables input (export)", RED_, Marker::Ring, true, &same),
                series("iptables (export)", GREEN_, Marker::Triangle, false, &same),
            ],
        };
        let rgb = render_rgb(&chart);
        for s in &chart.series {
            let n = pixels(&rgb, s.color);
            assert!(n > 100, "{}: {n} pixels of its colour in the plot", s.label);
        }
        let png = render_png(&chart);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (W, H));
    }
}
