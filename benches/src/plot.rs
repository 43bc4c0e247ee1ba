//! Charts of `leasehold bench` runs (`leasehold plot`): reads the CSV table that
//! `--output-csv` appends to (the columns of [`RunRecord::columns`]) and draws two SVG
//! charts, throughput and latency percentiles, against a column the caller picks (`theta`,
//! `clients`, ...), one series per distinct value of another column (`workload`, `fsync`,
//! ...) or one series for all runs.
//!
//! Reading the table into points ([`parse_csv`], [`series_from_csv`]) and drawing a chart
//! into SVG text ([`throughput_svg`], [`latency_svg`]) are pure; only [`plot_file`] touches
//! the file system. SVG only: plotters then needs neither fonts nor C libraries (it
//! estimates text widths with built-in metrics, and the viewer draws the text).
//!
//! [`RunRecord::columns`]: crate::record::RunRecord::columns

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The columns of [`crate::record::RunRecord::columns`] that the charts draw (the test
/// `the_charted_columns_are_the_records_columns` keeps them in step with record.rs).
pub const THROUGHPUT_COLUMN: &str = "throughput_per_second";
/// The latency percentiles drawn, as (legend label, column in microseconds).
pub const LATENCY_COLUMNS: [(&str, &str); 3] =
    [("p50", "latency_p50_us"), ("p99", "latency_p99_us"), ("p99.9", "latency_p999_us")];

/// The name of the one series when the caller names no series column.
pub const ALL_RUNS: &str = "all runs";
/// The name of the series of runs whose series column is empty (e.g. `fsync` of a remote node).
pub const EMPTY_VALUE: &str = "(none)";

/// Failures reading a table or drawing its charts; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    InFile { path: String, source: Box<PlotError> },
    #[error("the file is empty (no header line); write runs with `leasehold bench --output-csv`")]
    Empty,
    #[error("the file has a header but no runs")]
    NoRuns,
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("no column {column:?} in the file (columns: {available})")]
    UnknownColumn { column: String, available: String },
    #[error("line {line}: column {column:?} holds {value:?}, not a number")]
    NotNumeric { column: String, line: usize, value: String },
    #[error("cannot draw the {chart} chart: {reason}")]
    Render { chart: &'static str, reason: String },
}

/// A CSV table: the header and the rows, each with the line it starts on (for errors).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    /// The index of `column`, or an error naming it and the columns there are.
    pub fn column(&self, column: &str) -> Result<usize, PlotError> {
        self.header
            .iter()
            .position(|name| name == column)
            .ok_or_else(|| PlotError::UnknownColumn { column: column.to_string(), available: self.header.join(", ") })
    }
}

/// Parses CSV as `record::csv_field` writes it (RFC 4180): fields separated by commas,
/// quoted when they hold a comma, a quote (doubled) or a line break; rows end with LF or
/// CRLF. Every row must have as many fields as the header: a row from another version of
/// the columns would otherwise be read under the wrong names.
pub fn parse_csv(text: &str) -> Result<Table, PlotError> {
    let mut records: Vec<(usize, Vec<String>)> = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut record_line) = (1, 1);
    let (mut quoted, mut after_quote) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => (quoted, after_quote) = (false, true),
                other => {
                    line += usize::from(other == '\n');
                    field.push(other);
                }
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut fields)));
                line += 1;
                record_line = line;
                after_quote = false;
            }
            '"' if field.is_empty() && !after_quote => quoted = true,
            _ if after_quote => {
                return Err(PlotError::Malformed { line, reason: "text after a closing quote".into() });
            }
            other => field.push(other),
        }
    }
    if quoted {
        return Err(PlotError::Malformed { line: record_line, reason: "a quoted field is never closed".into() });
    }
    // The last row may lack its line end (a run cut short while appending).
    if !field.is_empty() || !fields.is_empty() || after_quote {
        fields.push(field);
        records.push((record_line, fields));
    }
    // Blank lines carry no run (a file edited by hand may end with some).
    records.retain(|(_, fields)| !(fields.len() == 1 && fields[0].is_empty()));
    let mut records = records.into_iter();
    let (_, header) = records.next().ok_or(PlotError::Empty)?;
    let rows: Vec<_> = records.collect();
    for (line, fields) in &rows {
        if fields.len() != header.len() {
            return Err(PlotError::Malformed {
                line: *line,
                reason: format!("{} fields under a header of {}", fields.len(), header.len()),
            });
        }
    }
    Ok(Table { header, rows })
}

/// One run as the charts draw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    /// Transactions that ran (committed + aborted) per second.
    pub throughput: f64,
    /// The latency percentiles of [`LATENCY_COLUMNS`], in that order, in milliseconds.
    pub latency_ms: [f64; 3],
}

/// The runs that share one value of the series column, sorted by x (runs with the same x
/// keep their order in the file).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

impl Series {
    /// One point per distinct x, averaging the runs there: the line goes through these,
    /// while every run is still drawn as a marker, so repeated runs show their spread.
    pub fn means(&self) -> Vec<Point> {
        let mut means: Vec<(Point, usize)> = Vec::new();
        for point in &self.points {
            match means.last_mut() {
                Some((sum, count)) if sum.x == point.x => {
                    sum.throughput += point.throughput;
                    for (total, value) in sum.latency_ms.iter_mut().zip(point.latency_ms) {
                        *total += value;
                    }
                    *count += 1;
                }
                _ => means.push((point.clone(), 1)),
            }
        }
        means
            .into_iter()
            .map(|(sum, count)| Point {
                x: sum.x,
                throughput: sum.throughput / count as f64,
                latency_ms: sum.latency_ms.map(|total| total / count as f64),
            })
            .collect()
    }
}

/// Groups the runs of a CSV table into series: x from column `x`, one series per distinct
/// value of column `series` (numeric values in numeric order, others in text order), or
/// one series named [`ALL_RUNS`] without it.
pub fn series_from_csv(text: &str, x: &str, series: Option<&str>) -> Result<Vec<Series>, PlotError> {
    let table = parse_csv(text)?;
    let x_index = table.column(x)?;
    let series_index = series.map(|column| table.column(column)).transpose()?;
    let throughput_index = table.column(THROUGHPUT_COLUMN)?;
    let latency_indices =
        [table.column(LATENCY_COLUMNS[0].1)?, table.column(LATENCY_COLUMNS[1].1)?, table.column(LATENCY_COLUMNS[2].1)?];
    if table.rows.is_empty() {
        return Err(PlotError::NoRuns);
    }
    let mut grouped: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (line, fields) in &table.rows {
        let number = |index: usize| -> Result<f64, PlotError> {
            let value = fields[index].trim();
            value.parse::<f64>().ok().filter(|number| number.is_finite()).ok_or_else(|| PlotError::NotNumeric {
                column: table.header[index].clone(),
                line: *line,
                value: value.to_string(),
            })
        };
        let point = Point {
            x: number(x_index)?,
            throughput: number(throughput_index)?,
            latency_ms: [
                number(latency_indices[0])? / 1000.0,
                number(latency_indices[1])? / 1000.0,
                number(latency_indices[2])? / 1000.0,
            ],
        };
        let name = match series_index {
            None => ALL_RUNS.to_string(),
            Some(index) if fields[index].is_empty() => EMPTY_VALUE.to_string(),
            Some(index) => fields[index].clone(),
        };
        grouped.entry(name).or_default().push(point);
    }
    let mut series: Vec<Series> = grouped
        .into_iter()
        .map(|(name, mut points)| {
            // Stable: runs at the same x stay in the order they ran.
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            Series { name, points }
        })
        .collect();
    // Series named by numbers (`clients`, `executor_threads`) read best in numeric order.
    if series.iter().all(|series| series.name.parse::<f64>().is_ok()) {
        series.sort_by(|a, b| {
            let number = |name: &str| name.parse::<f64>().unwrap_or(f64::NAN);
            number(&a.name).total_cmp(&number(&b.name))
        });
    }
    Ok(series)
}

/// The caption of the x axis: the column, with what it means for the columns one
/// commonly plots against.
pub fn axis_caption(column: &str) -> String {
    let meaning = match column {
        "theta" => "Zipfian skew, 0 = uniform",
        "clients" => "client connections",
        "batch" => "requests per message",
        "pipeline" => "messages in flight per client",
        "executor_threads" => "executor threads",
        "keys" => "keys",
        "rate" => "offered requests/s, open loop",
        "key_groups" => "key groups",
        _ => return column.to_string(),
    };
    format!("{column} ({meaning})")
}

/// The chart size in pixels; the legend takes a strip on the right so that it never hides
/// a line.
const SIZE: (u32, u32) = (1000, 600);
const LEGEND_WIDTH: u32 = 220;

/// The throughput chart as SVG text: transactions/s against `x_column`, one line per series.
pub fn throughput_svg(series: &[Series], x_column: &str) -> Result<String, PlotError> {
    let failed = |reason: String| PlotError::Render { chart: "throughput", reason };
    let (x_low, x_high) = x_range(series);
    let y_high = series.iter().flat_map(|series| &series.points).map(|point| point.throughput).fold(0.0, f64::max);
    // Throughput starts at zero so that lines compare by height; an all-zero table still
    // gets an axis.
    let y_high = if y_high > 0.0 { y_high * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|error| failed(error.to_string()))?;
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(format!("Throughput against {x_column}"), ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x_low..x_high, 0.0..y_high)
            .map_err(|error| failed(error.to_string()))?;
        draw_mesh(&mut chart, x_column, "transactions/s (committed + aborted)").map_err(failed)?;
        let mut legend = Vec::new();
        for (index, one) in series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let line = one.means().into_iter().map(|point| (point.x, point.throughput));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|error| failed(error.to_string()))?;
            chart
                .draw_series(one.points.iter().map(|point| Circle::new((point.x, point.throughput), 4, color.filled())))
                .map_err(|error| failed(error.to_string()))?;
            legend.push((one.name.clone(), color, Marker::Circle, false));
        }
        draw_legend(&legend_area, &legend).map_err(failed)?;
        root.present().map_err(|error| failed(error.to_string()))?;
    }
    Ok(svg)
}

/// The latency chart as SVG text: p50, p99 and p99.9 in milliseconds (log scale, as they
/// span orders of magnitude) against `x_column`; one color per series, one marker and
/// line style per percentile.
pub fn latency_svg(series: &[Series], x_column: &str) -> Result<String, PlotError> {
    let failed = |reason: String| PlotError::Render { chart: "latency", reason };
    let (x_low, x_high) = x_range(series);
    let latencies = || series.iter().flat_map(|series| &series.points).flat_map(|point| point.latency_ms);
    // A log axis cannot show zero (a run that measured nothing): such values sit on the floor.
    let floor = 0.001;
    let y_low = latencies().fold(f64::INFINITY, f64::min).max(floor);
    let y_high = latencies().fold(0.0, f64::max).max(y_low);
    // The axis starts at a power of ten below the lowest value (with room), so that its
    // first tick is at its foot.
    let y_low = 10f64.powf((y_low / 1.2).log10().floor());
    let y_high = (y_high * 1.5).max(y_low * 2.0);
    let (labelled, grid) = log_ticks(y_low, y_high);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|error| failed(error.to_string()))?;
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(format!("Latency percentiles against {x_column}"), ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(
                x_low..x_high,
                (y_low..y_high).log_scale().with_key_points(labelled).with_light_points(grid),
            )
            .map_err(|error| failed(error.to_string()))?;
        draw_mesh(&mut chart, x_column, "latency (ms, log scale)").map_err(failed)?;
        // With one unnamed series the legend needs only the percentiles.
        let lone = series.len() == 1 && series[0].name == ALL_RUNS;
        let mut legend = Vec::new();
        for (index, one) in series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let means = one.means();
            for (percentile, (label, _)) in LATENCY_COLUMNS.iter().enumerate() {
                let marker = [Marker::Circle, Marker::Triangle, Marker::Cross][percentile];
                let dashed = percentile > 0;
                let line = means.iter().map(|point| (point.x, point.latency_ms[percentile].max(floor)));
                if dashed {
                    chart
                        .draw_series(DashedLineSeries::new(line, 8, 5, color.stroke_width(2)))
                        .map_err(|error| failed(error.to_string()))?;
                } else {
                    chart
                        .draw_series(LineSeries::new(line, color.stroke_width(2)))
                        .map_err(|error| failed(error.to_string()))?;
                }
                for point in &one.points {
                    let at = (point.x, point.latency_ms[percentile].max(floor));
                    marker.draw(chart.plotting_area(), at, color).map_err(failed)?;
                }
                let name = if lone { label.to_string() } else { format!("{} {label}", one.name) };
                legend.push((name, color, marker, dashed));
            }
        }
        draw_legend(&legend_area, &legend).map_err(failed)?;
        root.present().map_err(|error| failed(error.to_string()))?;
    }
    Ok(svg)
}

/// The x axis range over all points, widened when every run has the same x (a range of
/// zero width cannot be drawn) and padded so that end markers are not cut in half.
/// Draws the grid, axis labels and captions every chart shares.
fn draw_mesh<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    x_column: &str,
    y_caption: &str,
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_caption = axis_caption(x_column);
    chart
        .configure_mesh()
        .x_desc(x_caption)
        .y_desc(y_caption)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .bold_line_style(BLACK.mix(0.2))
        .light_line_style(BLACK.mix(0.05))
        .x_label_formatter(&|value| short_number(*value))
        .y_label_formatter(&|value| short_number(*value))
        .draw()
        .map_err(|error| error.to_string())
}

fn x_range(series: &[Series]) -> (f64, f64) {
    let xs = || series.iter().flat_map(|series| &series.points).map(|point| point.x);
    let (low, high) = (xs().fold(f64::INFINITY, f64::min), xs().fold(f64::NEG_INFINITY, f64::max));
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0);
    }
    if high - low <= f64::EPSILON * low.abs().max(1.0) {
        let half = (low.abs() * 0.1).max(0.5);
        return (low - half, high + half);
    }
    let pad = (high - low) * 0.04;
    (low - pad, high + pad)
}

/// An axis label: plain numbers without float noise (0.99, not 0.9900000000000001).
fn short_number(value: f64) -> String {
    let text = if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if text == "-0" {
        "0".to_string()
    } else {
        text
    }
}

/// The ticks of a log axis from `low` to `high`: labelled at 1, 2 and 5 times each power
/// of ten, grid lines at every integer multiple. Chosen here because plotters' own log ticks
/// start at the first power of ten in range (a range of 12 to 280 ms would show only 100
/// and 200) and crowd their labels towards the top of each decade.
fn log_ticks(low: f64, high: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut labelled, mut grid) = (Vec::new(), Vec::new());
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high {
        for step in 1..10 {
            // Rounded so that 3 × 0.1 labels as 0.3, not 0.30000000000000004.
            let tick = (f64::from(step) * decade * 1e9).round() / 1e9;
            if tick < low * (1.0 - 1e-9) || tick > high {
                continue;
            }
            grid.push(tick);
            if [1, 2, 5].contains(&step) {
                labelled.push(tick);
            }
        }
        decade *= 10.0;
    }
    (labelled, grid)
}

/// The marker of a run: one shape per latency percentile, so that the chart reads in
/// black and white too.
#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Cross,
}

impl Marker {
    /// Draws the marker at `at` in any area (the chart's coordinates or the legend's pixels).
    fn draw<DB: DrawingBackend, CT: CoordTranslate>(
        self,
        area: &DrawingArea<DB, CT>,
        at: CT::From,
        color: RGBAColor,
    ) -> Result<(), String>
    where
        CT::From: Clone,
    {
        let drawn = match self {
            Marker::Circle => area.draw(&Circle::new(at, 4, color.filled())),
            Marker::Triangle => area.draw(&TriangleMarker::new(at, 5, color.filled())),
            Marker::Cross => area.draw(&Cross::new(at, 4, color.stroke_width(2))),
        };
        drawn.map_err(|error| error.to_string())
    }
}

/// Draws the legend into its strip: a line sample with the marker, then the name.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, RGBAColor, Marker, bool)],
) -> Result<(), String> {
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    for (row, (name, color, marker, dashed)) in entries.iter().enumerate() {
        let y = 60 + 24 * row as i32;
        let sample = if *dashed {
            vec![vec![(8, y), (16, y)], vec![(21, y), (29, y)], vec![(34, y), (40, y)]]
        } else {
            vec![vec![(8, y), (40, y)]]
        };
        for piece in sample {
            area.draw(&PathElement::new(piece, color.stroke_width(2))).map_err(|error| error.to_string())?;
        }
        marker.draw(area, (24, y), *color)?;
        area.draw(&Text::new(name.clone(), (48, y - 8), font.clone())).map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// The two charts of the runs in the CSV file `input`, written to
/// `<output_prefix>-throughput.svg` and `<output_prefix>-latency.svg` (creating the
/// prefix's directory); returns their paths.
pub fn plot_file(
    input: &Path,
    x_column: &str,
    series_column: Option<&str>,
    output_prefix: &Path,
) -> Result<[PathBuf; 2], PlotError> {
    let text = std::fs::read_to_string(input)
        .map_err(|source| PlotError::Read { path: input.display().to_string(), source })?;
    let series = series_from_csv(&text, x_column, series_column)
        .map_err(|error| PlotError::InFile { path: input.display().to_string(), source: Box::new(error) })?;
    let charts = [("throughput", throughput_svg(&series, x_column)?), ("latency", latency_svg(&series, x_column)?)];
    if let Some(directory) = output_prefix.parent().filter(|directory| !directory.as_os_str().is_empty()) {
        std::fs::create_dir_all(directory)
            .map_err(|source| PlotError::Write { path: directory.display().to_string(), source })?;
    }
    let mut paths = Vec::new();
    for (chart, svg) in charts {
        // Appended to the prefix as text: `plots/banking` gives `plots/banking-latency.svg`.
        let mut path = output_prefix.as_os_str().to_owned();
        path.push(format!("-{chart}.svg"));
        let path = PathBuf::from(path);
        std::fs::write(&path, svg).map_err(|source| PlotError::Write { path: path.display().to_string(), source })?;
        paths.push(path);
    }
    let [throughput, latency]: [PathBuf; 2] = paths.try_into().expect("two charts were written");
    Ok([throughput, latency])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunRecord;

    /// Three columns as record.rs names them, plus the ones the charts need.
    fn csv(rows: &[&str]) -> String {
        let mut text =
            "theta,clients,workload,throughput_per_second,latency_p50_us,latency_p99_us,latency_p999_us\n".to_string();
        for row in rows {
            text += row;
            text += "\n";
        }
        text
    }

    fn record(workload: &str, theta: f64, throughput: f64) -> RunRecord {
        RunRecord {
            started_at: "2025-11-29T23:30:00Z".into(),
            workload: workload.into(),
            keys: 10_000,
            initial_value: 1_000,
            theta,
            clients: 4,
            batch: 200,
            pipeline: 4,
            warmup_seconds: 1.0,
            duration_seconds: 2.0,
            rate: None,
            seed: 1,
            node: "embedded".into(),
            fsync: Some("every-epoch".into()),
            executor_threads: Some(2),
            // Quoted in the CSV: the reader must not split it.
            cpu_model: Some("Intel Xeon, KVM".into()),
            cores: 2,
            memory_bytes: None,
            load_average_before: Some(0.5),
            load_average_after: None,
            committed: 1_000,
            aborted: 10,
            rejected: 0,
            measured_seconds: 2.0,
            throughput_per_second: throughput,
            abort_rate: 0.01,
            latency_p50_us: 1_500,
            latency_p90_us: 2_000,
            latency_p99_us: 3_000,
            latency_p999_us: 9_000,
            latency_max_us: 12_000,
            // Quotes, a comma and a line break: every case of csv_field's quoting.
            invariant: "violated: user \"3\", see\nbelow".into(),
            cc: Some("2pl".into()),
            key_groups: 1,
            route_by_lease_table: false,
            request_ids_at_node: false,
            tracking: "sessions".into(),
            concurrency_retries: None,
        }
    }

    #[test]
    fn parsing_groups_rows_into_series_sorted_by_x() {
        let text = csv(&[
            "0.99,4,banking,500.0,2000,8000,20000",
            "0,4,banking,1000.0,1000,4000,10000",
            "0.5,4,ycsb-t,700.0,1500,6000,15000",
            "0,4,ycsb-t,900.0,1200,5000,12000",
            "0.5,4,banking,800.0,1400,5000,12000",
        ]);
        let series = series_from_csv(&text, "theta", Some("workload")).expect("series");
        let names: Vec<&str> = series.iter().map(|series| series.name.as_str()).collect();
        assert_eq!(names, ["banking", "ycsb-t"]);
        let xs = |series: &Series| series.points.iter().map(|point| point.x).collect::<Vec<_>>();
        assert_eq!(xs(&series[0]), [0.0, 0.5, 0.99]);
        assert_eq!(xs(&series[1]), [0.0, 0.5]);
        assert_eq!(series[0].points[0], Point { x: 0.0, throughput: 1000.0, latency_ms: [1.0, 4.0, 10.0] });
        // Without a series column every run is in one series.
        let all = series_from_csv(&text, "theta", None).expect("one series");
        assert_eq!((all.len(), all[0].name.as_str(), all[0].points.len()), (1, ALL_RUNS, 5));
        // Numeric series names sort as numbers (4 before 16), not as text.
        let text = csv(&["0,16,banking,1.0,1,1,1", "0,4,banking,1.0,1,1,1"]);
        let by_clients = series_from_csv(&text, "theta", Some("clients")).expect("series");
        assert_eq!(by_clients.iter().map(|series| series.name.as_str()).collect::<Vec<_>>(), ["4", "16"]);
    }

    #[test]
    fn repeated_runs_average_into_one_point_of_the_line() {
        let text = csv(&["0,4,banking,1000.0,1000,4000,10000", "0,4,banking,500.0,3000,6000,20000"]);
        let series = series_from_csv(&text, "theta", None).expect("series");
        assert_eq!(series[0].points.len(), 2);
        assert_eq!(series[0].means(), [Point { x: 0.0, throughput: 750.0, latency_ms: [2.0, 5.0, 15.0] }]);
    }

    #[test]
    fn an_unknown_column_is_an_error_naming_it() {
        let text = csv(&["0,4,banking,1000.0,1000,4000,10000"]);
        let error = series_from_csv(&text, "thetta", None).expect_err("no such column");
        assert!(matches!(&error, PlotError::UnknownColumn { column, .. } if column == "thetta"));
        let message = error.to_string();
        assert!(message.contains("\"thetta\"") && message.contains("theta, clients, workload"), "{message}");
        let error = series_from_csv(&text, "theta", Some("cc")).expect_err("no such series column");
        assert!(error.to_string().contains("\"cc\""), "{error}");
    }

    #[test]
    fn bad_contents_are_errors_not_panics() {
        assert!(matches!(series_from_csv("", "theta", None), Err(PlotError::Empty)));
        assert!(matches!(series_from_csv("\n\n", "theta", None), Err(PlotError::Empty)));
        assert!(matches!(series_from_csv(&csv(&[]), "theta", None), Err(PlotError::NoRuns)));
        let error = series_from_csv(&csv(&["0,4,banking,1.0,1,1,1"]), "workload", None).expect_err("text x");
        assert_eq!(error.to_string(), "line 2: column \"workload\" holds \"banking\", not a number");
        let error = series_from_csv(&csv(&["0,4,banking,1.0,1,1"]), "theta", None).expect_err("short row");
        assert_eq!(error.to_string(), "line 2: 6 fields under a header of 7");
        let error = parse_csv("a,b\n\"open,1\n").expect_err("unclosed quote");
        assert!(matches!(error, PlotError::Malformed { line: 2, .. }), "{error}");
        let error = parse_csv("a,b\n\"x\"y,1\n").expect_err("text after a quote");
        assert!(matches!(error, PlotError::Malformed { line: 2, .. }), "{error}");
    }

    #[test]
    fn the_reader_reads_what_record_writes() {
        let first = record("banking", 0.0, 1234.5);
        let mut text = format!("{}\n{}\n", first.csv_header(), first.csv_row());
        // CRLF line ends and a last row without one read the same.
        text += &format!("{}\r\n", record("banking", 0.99, 600.0).csv_row());
        text += &record("ycsb-t", 0.5, 800.0).csv_row();
        let table = parse_csv(&text).expect("table");
        assert_eq!(table.header.len(), first.columns().len());
        assert_eq!(table.rows.len(), 3);
        let cpu = table.column("cpu_model").expect("cpu_model");
        let invariant = table.column("invariant").expect("invariant");
        assert_eq!(table.rows[0].1[cpu], "Intel Xeon, KVM");
        assert_eq!(table.rows[0].1[invariant], "violated: user \"3\", see\nbelow");
        // The row after a quoted line break starts on the line after it.
        assert_eq!(table.rows.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [2, 4, 6]);
        let series = series_from_csv(&text, "theta", Some("workload")).expect("series");
        assert_eq!(series[0].points[0], Point { x: 0.0, throughput: 1234.5, latency_ms: [1.5, 3.0, 9.0] });
        assert_eq!(series[0].points[1].x, 0.99);
        assert_eq!(series[1].name, "ycsb-t");
        // Empty optional columns (`rate` of a closed-loop run) are a series of their own.
        let by_memory = series_from_csv(&text, "theta", Some("memory_bytes")).expect("series");
        assert_eq!(by_memory[0].name, EMPTY_VALUE);
    }

    #[test]
    fn the_charted_columns_are_the_records_columns() {
        let columns: Vec<&str> = record("banking", 0.0, 1.0).columns().into_iter().map(|(name, _)| name).collect();
        for column in [THROUGHPUT_COLUMN, "theta", "clients"].into_iter().chain(LATENCY_COLUMNS.map(|(_, c)| c)) {
            assert!(columns.contains(&column), "record.rs writes no column {column}");
        }
    }

    #[test]
    fn rendering_writes_svgs_with_series_names_and_axis_captions() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let input = directory.path().join("runs.csv");
        std::fs::write(
            &input,
            csv(&[
                "0,4,banking,1000.0,1000,4000,10000",
                "0.99,4,banking,500.0,2000,8000,20000",
                "0,4,ycsb-t,900.0,1200,5000,12000",
                "0.99,4,ycsb-t,400.0,2500,9000,30000",
            ]),
        )
        .expect("write the table");
        // The prefix's directory does not exist yet: plot_file creates it.
        let prefix = directory.path().join("plots").join("banking");
        let [throughput, latency] = plot_file(&input, "theta", Some("workload"), &prefix).expect("charts");
        assert_eq!(throughput, directory.path().join("plots").join("banking-throughput.svg"));
        assert_eq!(latency, directory.path().join("plots").join("banking-latency.svg"));
        let throughput = std::fs::read_to_string(&throughput).expect("throughput chart");
        let latency = std::fs::read_to_string(&latency).expect("latency chart");
        for svg in [&throughput, &latency] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
            assert!(svg.contains("theta (Zipfian skew, 0 = uniform)"));
        }
        assert!(throughput.contains("Throughput against theta"));
        assert!(throughput.contains("transactions/s (committed + aborted)"));
        assert!(throughput.contains(">\nbanking\n") || throughput.contains(">banking<"), "no series banking");
        assert!(throughput.contains("ycsb-t"));
        assert!(latency.contains("latency (ms, log scale)"));
        for name in ["banking p50", "banking p99", "banking p99.9", "ycsb-t p50", "ycsb-t p99.9"] {
            assert!(latency.contains(name), "no legend entry {name}");
        }
        // One run, one series: still drawable (the x range is widened), legend by percentile.
        let lone = series_from_csv(&csv(&["0,4,banking,1000.0,0,4000,10000"]), "clients", None).expect("series");
        let svg = latency_svg(&lone, "clients").expect("latency chart");
        assert!(svg.contains(">\np99.9\n") || svg.contains(">p99.9<"), "legend by percentile");
        assert!(throughput_svg(&lone, "clients").expect("throughput chart").contains("clients (client connections)"));
        // A file that cannot be read names itself.
        let missing = directory.path().join("missing.csv");
        let error = plot_file(&missing, "theta", None, &prefix).expect_err("no file");
        assert!(error.to_string().contains("missing.csv"), "{error}");
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short_number(0.9900000000000001), "0.99");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(-0.0001), "0");
        assert_eq!(short_number(12_345.6), "12346");
        assert_eq!(short_number(2.5), "2.5");
        let (labelled, grid) = log_ticks(10.0, 280.0);
        assert_eq!(labelled, [10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(grid.len(), 9 + 2);
        assert_eq!(log_ticks(0.1, 0.35).0, [0.1, 0.2]);
    }
}
