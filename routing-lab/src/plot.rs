//! The quality-vs-strong-calls curve as an SVG plot (plotters, SVG backend only).
//!
//! One line per router (e.g. the scorer, prompt length, random, oracle) over the share of
//! prompts sent to the strong model, with the average quality on the y axis.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use slmgate_routing::metrics::Curve;

/// Errors drawing or writing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed to draw.
    #[error("drawing the plot: {0}")]
    Draw(String),
    /// The file could not be written.
    #[error("writing {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Line colours, in the order of the curves.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Renders the curves (label, curve) as an SVG document, 800×560 pixels.
pub fn curves_svg(title: &str, curves: &[(String, Curve)]) -> Result<String, PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    // The y range covers every curve, with a margin.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, c) in curves {
        for p in &c.points {
            if p.quality.is_finite() {
                lo = lo.min(p.quality);
                hi = hi.max(p.quality);
            }
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.01);
    let (lo, hi) = (lo - pad, hi + pad);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..100f64, lo..hi)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("calls to the strong model (%)")
            .y_desc("average quality")
            .draw()
            .map_err(|e| draw(&e))?;
        for (i, (label, curve)) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = curve
                .points
                .iter()
                .filter(|p| p.quality.is_finite())
                .map(|p| (p.strong_share * 100.0, p.quality))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    Ok(svg)
}

/// Writes [`curves_svg`] to `path`.
pub fn write_curves_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Curve)],
) -> Result<(), PlotError> {
    let svg = curves_svg(title, curves)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmgate_routing::metrics::Routed;

    #[test]
    fn draws_labelled_curves() {
        let rows = [
            Routed {
                score: 0.9,
                weak: 0.0,
                strong: 1.0,
            },
            Routed {
                score: 0.1,
                weak: 1.0,
                strong: 1.0,
            },
        ];
        let curves = vec![
            ("scorer".to_string(), Curve::new(&rows)),
            (
                "random".to_string(),
                Curve::new(&rows.map(|r| Routed { score: 0.0, ..r })),
            ),
            ("empty".to_string(), Curve::new(&[])),
        ];
        let svg = curves_svg("test plot", &curves).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in [
            "test plot",
            "scorer",
            "random",
            "calls to the strong model (%)",
            "average quality",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.svg");
        write_curves_svg(&p, "t", &curves).expect("write");
        assert!(std::fs::metadata(&p)
            .map(|m| m.len() > 100)
            .unwrap_or(false));
        let e = write_curves_svg(Path::new("/nonexistent/dir/c.svg"), "t", &curves)
            .expect_err("bad path");
        assert!(e.to_string().contains("/nonexistent/dir/c.svg"));
        // Nothing to draw is still a valid (empty) plot.
        assert!(curves_svg("none", &[]).is_ok());
    }
}
