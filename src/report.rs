//! Benchmark reports: Markdown tables for the docs and SVG charts drawn with plotters.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

/// A Markdown table built row by row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(headers: &[S]) -> Self {
        Self {
            headers: headers.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: ToString>(&mut self, cells: &[S]) {
        self.rows
            .push(cells.iter().map(ToString::to_string).collect());
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(&vec!["---".to_string(); self.headers.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One group of bars (e.g. a workload) with one value per series (e.g. a filesystem).
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub label: String,
    pub values: Vec<(String, f64)>,
}

/// Draws a grouped bar chart as SVG: one cluster per group, one coloured bar per series.
pub fn grouped_bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[BarGroup],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut series: Vec<String> = Vec::new();
    for group in groups {
        for (name, _) in &group.values {
            if !series.contains(name) {
                series.push(name.clone());
            }
        }
    }
    let y_max = groups
        .iter()
        .flat_map(|g| g.values.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let slots = series.len().max(1) as f64 + 1.0; // one empty slot separates clusters
    let width = (groups.len() as f64 * slots * 22.0).max(640.0) as u32;

    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_end = groups.len() as f64 * slots;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, 0.0..y_max)?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(groups.len().max(1))
        .x_label_formatter(&|x| {
            let idx = (*x / slots).floor() as usize;
            labels.get(idx).cloned().unwrap_or_default()
        })
        .draw()?;

    for (s_idx, name) in series.iter().enumerate() {
        let color = Palette99::pick(s_idx).to_rgba();
        let bars = groups.iter().enumerate().filter_map(|(g_idx, group)| {
            let value = group.values.iter().find(|(n, _)| n == name)?.1;
            let x0 = g_idx as f64 * slots + s_idx as f64 + 0.5;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + 0.9, value)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The median of a sample (the mean of the two middle values for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Formats a Markdown cell for a ratio, e.g. "1.23×".
pub fn ratio_cell(value: f64, baseline: f64) -> String {
    let mut s = String::new();
    if baseline > 0.0 && value.is_finite() {
        let _ = write!(s, "{:.2}×", value / baseline);
    } else {
        s.push('–');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn markdown_table_has_header_separator_and_rows() {
        let mut t = Table::new(&["fs", "time"]);
        t.row(&["native", "0.02"]);
        assert_eq!(
            t.to_markdown(),
            "| fs | time |\n| --- | --- |\n| native | 0.02 |\n"
        );
    }

    #[test]
    fn chart_is_written_as_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.svg");
        let groups = vec![BarGroup {
            label: "walk".into(),
            values: vec![("native".into(), 1.0), ("overlayfs".into(), 1.3)],
        }];
        grouped_bar_chart(&path, "t", "× native", &groups).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") && svg.contains("<rect"));
    }
}
