//! The plot: requests per second over the run, admitted and refused, with the mean
//! and twice the mean, and the 100 ms rate behind it to show the waves.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;

/// The series to draw.
pub struct Series<'a> {
    /// Requests per 1 s bucket.
    pub total: &'a [u64],
    /// Refused (429/503) per 1 s bucket.
    pub refused: &'a [u64],
    /// Requests per 100 ms bucket, ×10 (a rate per second).
    pub fine: &'a [u64],
    /// Mean requests per second over the busy period.
    pub mean: f64,
    /// Title.
    pub title: String,
}

/// Draws `series` into a PNG at `path`.
pub fn draw(path: &Path, s: &Series<'_>) -> Result<()> {
    // Text through ab_glyph and an embedded DejaVu Sans: no system fonts needed.
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the embedded font does not load"))?;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let secs = s.total.len().max(1) as f64;
    let ymax = s
        .fine
        .iter()
        .map(|v| *v * 10)
        .chain(s.total.iter().copied())
        .max()
        .unwrap_or(1)
        .max((2.0 * s.mean).ceil() as u64) as f64
        * 1.08;
    let mut chart = ChartBuilder::on(&root)
        .caption(&s.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first request")
        .y_desc("requests per second")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let grey = RGBColor(170, 170, 170);
    chart
        .draw_series(LineSeries::new(
            s.fine
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 / 10.0 + 0.05, *v as f64 * 10.0)),
            grey.stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("per 100 ms (×10)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(AreaSeries::new(
            step(s.refused),
            0.0,
            red.mix(0.35).filled(),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("refused (429/503) per second")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 20, y + 5)], red.mix(0.35).filled())
        });
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(step(s.total), blue.stroke_width(3)))
        .map_err(|e| anyhow!("{e}"))?
        .label("all requests per second")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(3)));
    for (k, color, label) in [
        (1.0, BLACK, format!("mean {:.0}/s", s.mean)),
        (
            2.0,
            RGBColor(255, 127, 14),
            format!("2 × mean {:.0}/s", 2.0 * s.mean),
        ),
    ] {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, k * s.mean), (secs, k * s.mean)],
                8,
                6,
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A per-second series as steps (flat across each second).
fn step(v: &[u64]) -> Vec<(f64, f64)> {
    v.iter()
        .enumerate()
        .flat_map(|(i, y)| [(i as f64, *y as f64), (i as f64 + 1.0, *y as f64)])
        .collect()
}
