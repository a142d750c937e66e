//! Draws a `produce` run's [`Series`] as a PNG: throughput, latency percentiles and retries
//! per second, in three panels over one time axis, under a title with the run's parameters
//! and its totals.
//!
//! Drawn in process with `plotters` on an RGB buffer and encoded with `png`. Text uses the
//! DejaVu Sans subset in `examples/assets/` (compiled in, licence beside it), rasterised by
//! `ab_glyph`, so a plot needs no system fonts or font libraries.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use kinesis_producer::{Aggregation, RecordOrder};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::produce::ProduceOptions;
use super::report::{OutputFile, ProduceReport};
use super::series::{Point, Series};

/// DejaVu Sans 2.37, the characters a plot uses (see `examples/assets/README.md`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
/// The family name the font is registered under with `plotters`.
const FAMILY: &str = "sans-serif";

/// Width of a plot in pixels.
pub const WIDTH: u32 = 1280;
/// Height of a plot in pixels.
pub const HEIGHT: u32 = 1000;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(90, 90, 90);
/// Room above the highest value of a panel, for its legend (upper right).
const HEADROOM: f64 = 1.4;

/// The text above the panels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// The first line, larger.
    pub title: String,
    /// Further lines (parameters, totals).
    pub lines: Vec<String>,
}

/// A PNG file created before the run (see [`OutputFile`]).
#[derive(Debug)]
pub struct PlotFile(OutputFile);

impl PlotFile {
    /// Creates (or truncates) `path`, which must end in `.png`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        anyhow::ensure!(is_png, "--plot {}: the plot is a PNG file; name it *.png", path.display());
        OutputFile::create(path, "--plot").map(PlotFile)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Draws `series` into the file.
    pub fn write(self, series: &Series, labels: &Labels) -> anyhow::Result<()> {
        self.0.write(&render_png(series, labels)?)
    }
}

/// Registers the bundled font with `plotters` (once per process).
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the bundled plot font cannot be read");
    Ok(())
}

/// The plot as PNG bytes, [`WIDTH`] × [`HEIGHT`] pixels, RGB.
pub fn render_png(series: &Series, labels: &Labels) -> anyhow::Result<Vec<u8>> {
    register_font()?;
    let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, series, labels).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let mut writer = encoder.write_header().context("encoding the plot")?;
    writer.write_image_data(&rgb).context("encoding the plot")?;
    writer.finish().context("encoding the plot")?;
    Ok(png)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult<'a> =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

fn draw<'a>(root: &Area<'a>, series: &Series, labels: &Labels) -> DrawResult<'a> {
    root.fill(&WHITE)?;
    let header = 36 + 22 * labels.lines.len() as i32;
    root.draw(&Text::new(labels.title.clone(), (20, 10), font(24.0)))?;
    for (i, line) in labels.lines.iter().enumerate() {
        root.draw(&Text::new(line.clone(), (20, 42 + 22 * i as i32), font(16.0).color(&GREY)))?;
    }
    let body = root.margin(header, 5, 5, 15);
    let height = body.dim_in_pixel().1 as i32;
    let panels = body.split_by_breakpoints([] as [i32; 0], [height * 37 / 100, height * 74 / 100]);
    // Rates of a last bucket much shorter than the interval are mostly noise.
    let step = series.interval.as_secs_f64();
    let full: Vec<&Point> = series.points.iter().filter(|p| p.length >= step / 2.0).collect();
    let x_end = series.points.last().map_or(1.0, |p| p.start + p.length).max(1.0);
    throughput(&panels[0], &full, x_end)?;
    latency(&panels[1], &series.points, x_end)?;
    retries(&panels[2], &full, x_end)
}

/// The x coordinate of a bucket: its middle.
fn mid(p: &Point) -> f64 {
    p.start + p.length / 2.0
}

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
}

fn throughput<'a>(area: &Area<'a>, points: &[&Point], x_end: f64) -> DrawResult<'a> {
    let records_max = points
        .iter()
        .map(|p| p.sent_per_sec().max(p.delivered_per_sec()))
        .fold(0.0, f64::max)
        .max(1.0)
        * HEADROOM;
    let mib_max = points.iter().map(|p| p.mib_per_sec()).fold(0.0, f64::max).max(0.001) * HEADROOM;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput per second", font(19.0))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, 0.0..records_max)?
        .set_secondary_coord(0.0..x_end, 0.0..mib_max);
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("seconds since start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("user records/s")
        .y_label_formatter(&|v| si(*v))
        .label_style(font(14.0))
        .axis_desc_style(font(15.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("payload MiB/s")
        .y_label_formatter(&|v| decimals(*v, mib_max))
        .label_style(font(14.0))
        .axis_desc_style(font(15.0))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (mid(p), p.sent_per_sec())),
            ORANGE.stroke_width(2),
        ))?
        .label("sent (user records/s)")
        .legend(legend_line(ORANGE));
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (mid(p), p.delivered_per_sec())),
            BLUE.stroke_width(3),
        ))?
        .label("delivered (user records/s)")
        .legend(legend_line(BLUE));
    chart
        .draw_secondary_series(DashedLineSeries::new(
            points.iter().map(|p| (mid(p), p.mib_per_sec())),
            6,
            4,
            GREEN.stroke_width(2),
        ))?
        .label("delivered (MiB/s, right axis)")
        .legend(legend_line(GREEN));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}

fn latency<'a>(area: &Area<'a>, points: &[Point], x_end: f64) -> DrawResult<'a> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let with: Vec<&Point> = points.iter().filter(|p| p.latency.count > 0).collect();
    let low = with.iter().map(|p| ms(p.latency.p50)).fold(f64::INFINITY, f64::min);
    let high = with.iter().map(|p| ms(p.latency.max)).fold(0.0, f64::max);
    let (low, high) = if with.is_empty() { (1.0, 1000.0) } else { (low, high) };
    let low = (low / 1.5).max(0.01);
    let high = (high * HEADROOM.powi(4)).max(low * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("Send-to-delivery latency of the records delivered in each second", font(19.0))
        .margin(8)
        .margin_right(8 + 80) // as wide as the throughput panel's right axis: x axes line up
        .x_label_area_size(38)
        .y_label_area_size(80)
        .build_cartesian_2d(
            0.0..x_end,
            (low..high).log_scale().with_key_points(ticks_125(low, high)),
        )?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("seconds since start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("ms (log scale)")
        .y_label_formatter(&|v| millis(*v))
        .label_style(font(14.0))
        .axis_desc_style(font(15.0))
        .draw()?;
    for (name, color, width, pick) in [
        ("max", RED, 2, (|p: &Point| p.latency.max) as fn(&Point) -> Duration),
        ("p99", ORANGE, 2, |p: &Point| p.latency.p99),
        ("p50", BLUE, 3, |p: &Point| p.latency.p50),
    ] {
        // A second without deliveries breaks the line rather than dropping it to zero.
        for run in with.chunk_by(|a, b| (b.start - a.start - a.length).abs() < 1e-6) {
            chart.draw_series(LineSeries::new(
                run.iter().map(|p| (mid(p), ms(pick(p)).max(low))),
                color.stroke_width(width),
            ))?;
        }
        chart
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label(name)
            .legend(legend_line(color));
    }
    if with.is_empty() {
        area.draw(&Text::new("no record was delivered", (120, 80), font(16.0)))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}

fn retries<'a>(area: &Area<'a>, points: &[&Point], x_end: f64) -> DrawResult<'a> {
    let y_max = points
        .iter()
        .map(|p| p.retries_per_sec().max(p.failed_per_sec()))
        .fold(0.0, f64::max)
        .max(1.0)
        * HEADROOM;
    let mut chart = ChartBuilder::on(area)
        .caption("Retries and failures per second", font(19.0))
        .margin(8)
        .margin_right(8 + 80)
        .x_label_area_size(38)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, 0.0..y_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_labels(5)
        .x_desc("seconds since start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("per second")
        .y_label_formatter(&|v| si(*v))
        .label_style(font(14.0))
        .axis_desc_style(font(15.0))
        .draw()?;
    // Throttled retries are drawn over all retries, thinner, so that both stay visible when
    // every retry was a throttle.
    for (name, color, width, pick) in [
        ("retries (Kinesis records)", PURPLE, 5, Point::retries_per_sec as fn(&Point) -> f64),
        ("of which throttled", RED, 2, Point::throttled_per_sec),
        ("failed (user records)", BLACK, 2, Point::failed_per_sec),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (mid(p), pick(p))),
                color.stroke_width(width),
            ))?
            .label(name)
            .legend(legend_line(color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}

/// `950`, `12.5k`, `1.2M`.
fn si(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
    };
    let a = v.abs();
    if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.1}"))
    }
}

/// `825 205`: thousands apart.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `v` with enough decimals to tell apart ticks of an axis that ends at `max`.
fn decimals(v: f64, max: f64) -> String {
    let digits = (1.0 - max.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.digits$}")
}

/// Ticks at 1, 2 and 5 times the powers of ten between `low` and `high` (both positive).
fn ticks_125(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if (low..=high).contains(&t) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// A latency axis label in milliseconds: `0.5`, `20`, `1 500`.
fn millis(v: f64) -> String {
    if v >= 10.0 {
        let n = v.round() as u64;
        if n >= 10_000 { format!("{} {:03}", n / 1000, n % 1000) } else { n.to_string() }
    } else if v >= 1.0 {
        format!("{v:.1}").trim_end_matches(".0").to_owned()
    } else {
        format!("{v:.2}")
    }
}

/// The title and parameter lines of a `produce` run: what was asked, how the producer was
/// set, and what came of it. `hot_key_share` is the share sent to `key-0` (0 for none).
pub fn describe_run(
    options: &ProduceOptions,
    hot_key_share: f64,
    report: &ProduceReport,
) -> Labels {
    let config = &options.producer;
    let aggregation = match &config.aggregation {
        Aggregation::Off => "off".to_owned(),
        Aggregation::PerShard => "per shard".to_owned(),
        Aggregation::SamePartitionKey => "same key".to_owned(),
        other => format!("{other:?}"),
    };
    let order = match config.record_order {
        RecordOrder::PerKey => "per key".to_owned(),
        RecordOrder::Relaxed => "relaxed".to_owned(),
        other => format!("{other:?}"),
    };
    let compression = config
        .compression
        .map_or_else(|| "none".to_owned(), |c| format!("{:?}", c.codec).to_lowercase());
    let hot = if hot_key_share > 0.0 {
        format!(" ({:.0} % to key-0)", hot_key_share * 100.0)
    } else {
        String::new()
    };
    let title = format!(
        "kinesis-load produce: stream {}, {} shard(s) written, run {}",
        options.stream,
        report.per_shard.len(),
        options.run_id
    );
    let asked = format!(
        "rate {}, size {}, {} keys{hot}; aggregation {aggregation}, order {order}, compression \
         {compression}, buffering {} ms, shard rate limit {} %, {} requests in flight",
        options.rate,
        options.size,
        options.keys.keys(),
        config.record_max_buffered_time.as_millis(),
        config.rate_limit_percent,
        config.max_in_flight_requests,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let got = format!(
        "{} delivered in {:.1} s ({}/s, {:.2} MiB/s), {} failed; latency p50 {:.0} ms, p99 {:.0} ms, \
         max {:.0} ms; {} retries, {} throttled; ended {}",
        group(report.delivered),
        report.elapsed.as_secs_f64(),
        si(report.records_per_sec),
        report.mib_per_sec,
        group(report.failed),
        ms(report.latency.p50),
        ms(report.latency.p99),
        ms(report.latency.max),
        group(report.retries),
        group(report.throttled),
        utc_minute(SystemTime::now()),
    );
    Labels { title, lines: vec![asked, got] }
}

/// `2026-11-22 10:31 UTC`.
fn utc_minute(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (the proleptic Gregorian calendar), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::load::series::{CounterSample, SeriesRecorder};

    /// A scratch directory of this test process, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("kinesis-load-plot-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn small_series() -> Series {
        let mut r = SeriesRecorder::default();
        let mut samples = Vec::new();
        for s in 0..20u64 {
            for i in 0..50u64 {
                let at = Duration::from_millis(s * 1000 + i * 20);
                r.sent(at);
                if s == 7 && i % 5 == 0 {
                    r.failed(at);
                } else {
                    r.delivered(at, Duration::from_millis(80 + (i * 7 + s * 13) % 400), 100);
                }
            }
            samples.push(CounterSample {
                at: Duration::from_secs(s + 1),
                retries: s * s,
                throttled: s * s / 2,
            });
        }
        r.finish(Duration::from_millis(20_400), &samples)
    }

    fn decode(bytes: &[u8]) -> png::OutputInfo {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap()
    }

    #[test]
    fn a_small_series_renders_to_a_png_of_the_expected_size() {
        let dir = TempDir::new("render");
        let path = dir.0.join("run.png");
        let labels = Labels {
            title: "kinesis-load produce: stream s, 2 shard(s)".into(),
            lines: vec!["rate 50 records/s, size 100 B".into(), "1 000 delivered".into()],
        };
        PlotFile::create(&path).unwrap().write(&small_series(), &labels).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let info = decode(&bytes);
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert!(bytes.len() < 200_000, "{} bytes", bytes.len());
        // Something was drawn: not every pixel is white.
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert!(pixels.iter().filter(|b| **b < 128).count() > 10_000);
    }

    #[test]
    fn an_empty_series_still_renders() {
        let png = render_png(&Series::default(), &Labels::default()).unwrap();
        let info = decode(&png);
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    }

    #[test]
    fn a_plot_path_is_checked_before_the_run_and_not_left_empty() {
        let dir = TempDir::new("paths");
        let err = PlotFile::create(&dir.0.join("run.svg")).unwrap_err();
        assert!(err.to_string().contains("*.png"), "{err}");
        let err = PlotFile::create(&dir.0.join("missing/run.png")).unwrap_err();
        assert!(format!("{err:#}").contains("--plot"), "{err:#}");
        let path = dir.0.join("unused.png");
        let file = PlotFile::create(&path).unwrap();
        assert!(path.exists());
        drop(file);
        assert!(!path.exists(), "a plot file never written is removed");
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(2.5), "2.5");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_500.0), "12.5k");
        assert_eq!(si(40_000.0), "40k");
        assert_eq!(si(1_200_000.0), "1.2M");
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(825_205), "825 205");
        assert_eq!(group(1_000_000), "1 000 000");
        assert_eq!(millis(0.5), "0.50");
        assert_eq!(millis(2.0), "2");
        assert_eq!(millis(250.0), "250");
        assert_eq!(millis(12_000.0), "12 000");
        assert_eq!(decimals(0.5, 4.3), "0.5");
        assert_eq!(decimals(0.004, 0.012), "0.004");
        assert_eq!(decimals(30.0, 45.0), "30");
        assert_eq!(ticks_125(30.0, 1500.0), [50.0, 100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(ticks_125(0.3, 0.9), [0.5]);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc_minute(at(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(at(951_782_400 + 3_660)), "2000-02-29 01:01 UTC");
        assert_eq!(utc_minute(at(1_795_350_000)), "2026-11-22 12:20 UTC");
    }
}
