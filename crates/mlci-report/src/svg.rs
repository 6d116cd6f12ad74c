//! Line and point charts as inline SVG, drawn by hand.
//!
//! Every element carries its colours as SVG presentation attributes (not
//! `style=`, which Jenkins' Content Security Policy blocks), so a chart reads
//! the same without `report.css`; classes let the stylesheet refine it.
//! Text is measured by the browser, so no font files are needed here.

use std::fmt::Write;

use crate::text::{esc, fixed};

/// Colours, shared with `report.css`.
pub(crate) mod color {
    pub(crate) const COMPLETED: &str = "#2f6fd0";
    pub(crate) const PRUNED: &str = "#c98a12";
    pub(crate) const STOPPED: &str = "#6e7781";
    pub(crate) const FAILED: &str = "#cf3a2f";
    pub(crate) const RUNNING: &str = "#7c4dcc";
    pub(crate) const PENDING: &str = "#8c959f";
    pub(crate) const BEST: &str = "#15233d";
    pub(crate) const GOAL: &str = "#1f8a4c";
    pub(crate) const GRID: &str = "#e4e7eb";
    pub(crate) const AXIS: &str = "#9aa3ad";
    pub(crate) const INK: &str = "#57606a";
}

/// Label text over a white outline of itself, so it stays legible over
/// lines (`paint-order` would do it in one element, but is SVG 2 only).
fn halo_text(out: &mut String, attrs: &str, label: &str) {
    let label = esc(label);
    let _ = write!(
        out,
        r##"<text {attrs} stroke="#ffffff" stroke-width="3" stroke-linejoin="round" aria-hidden="true">{label}</text><text {attrs}>{label}</text>"##
    );
}

const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

/// One axis: its domain and the ticks to label.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    pub decimals: usize,
}

impl Axis {
    /// A linear axis covering `[lo, hi]` widened to round ticks, about
    /// `target` of them.
    pub(crate) fn linear(lo: f64, hi: f64, target: usize) -> Axis {
        let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
            let pad = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
            lo -= pad;
            hi += pad;
        }
        let step = nice_step((hi - lo) / target.max(1) as f64);
        let first = (lo / step).floor();
        let last = (hi / step).ceil();
        let ticks: Vec<f64> = (0..=(last - first) as i64)
            .map(|i| (first + i as f64) * step)
            .collect();
        Axis {
            lo: first * step,
            hi: last * step,
            ticks,
            decimals: decimals_for(step),
        }
    }

    /// An axis of whole numbers from `lo` to `hi`; with `pad`, half a unit
    /// of room either side (for points), else the lines touch the edges.
    pub(crate) fn integers(lo: u32, hi: u32, target: usize, pad: bool) -> Axis {
        let (lo, hi) = (f64::from(lo), f64::from(hi.max(lo)));
        let step = nice_step((hi - lo + 1.0) / target.max(1) as f64).max(1.0).round();
        let ticks: Vec<f64> = (0..)
            .map(|i| ((lo / step).ceil() + f64::from(i)) * step)
            .take_while(|t| *t <= hi)
            .filter(|t| *t >= lo)
            .collect();
        let (lo, hi) = if pad || hi == lo {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        Axis {
            lo,
            hi,
            ticks,
            decimals: 0,
        }
    }
}

fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * mag
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil().max(0.0) as usize
    }
}

/// Marker shapes, so state does not rest on colour alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Marker {
    Dot,
    Ring,
    Cross,
    Line,
    Dash,
}

/// A chart being drawn: a frame with axes, then data, then [`Chart::finish`].
pub(crate) struct Chart {
    out: String,
    /// Drawn last, above the data and outside its clip: labels and legend.
    overlay: String,
    id: String,
    width: f64,
    x: Axis,
    y: Axis,
    /// Plot area in pixels.
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    legend_x: f64,
}

/// Size and labels of a chart.
pub(crate) struct Frame<'a> {
    /// Unique in the page (used for the clip path).
    pub id: &'a str,
    /// What the chart shows, for screen readers.
    pub label: &'a str,
    pub width: f64,
    pub height: f64,
    pub x_title: &'a str,
    pub y_title: &'a str,
    /// Room to the right of the plot area (for end labels).
    pub right_margin: f64,
}

impl Chart {
    pub(crate) fn new(frame: &Frame<'_>, x: Axis, y: Axis) -> Chart {
        let (w, h) = (frame.width, frame.height);
        let mut c = Chart {
            out: String::with_capacity(8192),
            overlay: String::new(),
            id: frame.id.to_owned(),
            width: w,
            x,
            y,
            left: 60.0,
            right: w - frame.right_margin,
            top: 34.0,
            bottom: h - 44.0,
            legend_x: 60.0,
        };
        let _ = write!(
            c.out,
            r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}" font-family="{FONT}" font-size="12">"#,
            label = esc(frame.label),
        );
        let _ = write!(
            c.out,
            r#"<defs><clipPath id="clip-{id}"><rect x="{x}" y="{y}" width="{cw}" height="{ch}"/></clipPath></defs>"#,
            id = esc(&c.id),
            x = c.left - 6.0,
            y = c.top - 6.0,
            cw = c.right - c.left + 12.0,
            ch = c.bottom - c.top + 12.0,
        );
        c.axes(frame);
        c
    }

    fn axes(&mut self, frame: &Frame<'_>) {
        let (l, r, t, b) = (self.left, self.right, self.top, self.bottom);
        self.out.push_str(r#"<g class="grid">"#);
        for tick in self.y.ticks.clone() {
            let y = self.py(tick);
            let _ = write!(
                self.out,
                r#"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="{grid}"/><text x="{tx}" y="{y:.1}" dy="0.32em" text-anchor="end" fill="{ink}">{label}</text>"#,
                grid = color::GRID,
                ink = color::INK,
                tx = l - 8.0,
                label = fixed(tick, self.y.decimals),
            );
        }
        for tick in self.x.ticks.clone() {
            let x = self.px(tick);
            let _ = write!(
                self.out,
                r#"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{tb}" stroke="{axis}"/><text x="{x:.1}" y="{ty}" text-anchor="middle" fill="{ink}">{label}</text>"#,
                axis = color::AXIS,
                ink = color::INK,
                tb = b + 4.0,
                ty = b + 17.0,
                label = fixed(tick, self.x.decimals),
            );
        }
        let _ = write!(
            self.out,
            r#"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{axis}"/></g>"#,
            axis = color::AXIS
        );
        let _ = write!(
            self.out,
            r#"<text class="axis-title" x="{x:.1}" y="{y}" text-anchor="middle" fill="{ink}">{title}</text>"#,
            x = (l + r) / 2.0,
            y = b + 36.0,
            ink = color::INK,
            title = esc(frame.x_title),
        );
        let _ = write!(
            self.out,
            r#"<text class="axis-title" x="{l}" y="{y}" text-anchor="start" fill="{ink}" font-weight="600">{title}</text>"#,
            l = 8.0,
            y = t - 18.0,
            ink = color::INK,
            title = esc(frame.y_title),
        );
        self.legend_x = 8.0 + frame.y_title.chars().count() as f64 * 7.5 + 24.0;
        let _ = write!(
            self.out,
            r#"<g class="data" clip-path="url(#clip-{})">"#,
            esc(&self.id)
        );
    }

    pub(crate) fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.lo) / (self.x.hi - self.x.lo) * (self.right - self.left)
    }

    pub(crate) fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.lo) / (self.y.hi - self.y.lo) * (self.bottom - self.top)
    }

    /// The y domain (data units) of the plot area: markers of trials
    /// without a value go on its floor, outliers are pinned inside it.
    pub(crate) fn y_range(&self) -> (f64, f64) {
        (self.y.lo, self.y.hi)
    }

    /// A polyline through `points` (data units).
    pub(crate) fn line(&mut self, points: &[(f64, f64)], stroke: &Stroke<'_>, tip: &str) {
        if points.is_empty() {
            return;
        }
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        let _ = write!(
            self.out,
            r#"<polyline class="{class}" points="{pts}" fill="none" stroke="{color}" stroke-width="{w}" stroke-opacity="{o}" stroke-linejoin="round" stroke-linecap="round"{dash}><title>{tip}</title></polyline>"#,
            class = stroke.class,
            pts = pts.join(" "),
            color = stroke.color,
            w = stroke.width,
            o = stroke.opacity,
            dash = if stroke.dashed {
                r#" stroke-dasharray="5 4""#
            } else {
                ""
            },
            tip = esc(tip),
        );
    }

    /// A marker at (`x`, `y`) in data units.
    pub(crate) fn marker(&mut self, x: f64, y: f64, marker: Marker, color: &str, class: &str, tip: &str) {
        let (cx, cy) = (self.px(x), self.py(y));
        let shape = marker_svg(marker, cx, cy, color, 4.5);
        let _ = write!(
            self.out,
            r#"<g class="{class}">{shape}<title>{tip}</title></g>"#,
            tip = esc(tip)
        );
    }

    /// A ring around a point, to single it out.
    pub(crate) fn halo(&mut self, x: f64, y: f64, color: &str) {
        let _ = write!(
            self.out,
            r#"<circle class="halo" cx="{:.1}" cy="{:.1}" r="9" fill="none" stroke="{color}" stroke-width="2"/>"#,
            self.px(x),
            self.py(y)
        );
    }

    /// A horizontal reference line across the plot, labelled at its left
    /// end (early trials and steps rarely reach a goal, so that corner is
    /// usually free).
    pub(crate) fn hline(&mut self, y: f64, color: &str, class: &str, label: &str) {
        let py = self.py(y);
        let _ = write!(
            self.out,
            r#"<line class="{class}" x1="{l}" y1="{py:.1}" x2="{r}" y2="{py:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            l = self.left,
            r = self.right,
        );
        let attrs = format!(
            r#"class="{class}" x="{tx}" y="{ty:.1}" text-anchor="start" fill="{color}" font-weight="600""#,
            tx = self.left + 6.0,
            ty = py - 6.0,
        );
        halo_text(&mut self.overlay, &attrs, label);
    }

    /// A label just right of a point (above the clip, so it may use the
    /// right margin).
    pub(crate) fn end_label(&mut self, x: f64, y: f64, color: &str, label: &str) {
        let (px, py) = (self.px(x) + 6.0, self.py(y).clamp(self.top, self.bottom));
        if px > self.width - 10.0 {
            return;
        }
        let attrs = format!(
            r#"class="end-label" x="{px:.1}" y="{py:.1}" dy="0.32em" fill="{color}" font-weight="600""#
        );
        halo_text(&mut self.overlay, &attrs, label);
    }

    /// A note in the middle of the plot area (e.g. "no data yet").
    pub(crate) fn note(&mut self, text: &str) {
        let _ = write!(
            self.out,
            r#"<text class="note" x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="{ink}">{text}</text>"#,
            x = (self.left + self.right) / 2.0,
            y = (self.top + self.bottom) / 2.0,
            ink = color::INK,
            text = esc(text),
        );
    }

    /// One legend entry, placed after the previous ones along the top.
    pub(crate) fn legend(&mut self, marker: Marker, color: &str, label: &str) {
        let (x, y) = (self.legend_x, self.top - 22.0);
        let shape = marker_svg(marker, x + 6.0, y, color, 4.0);
        let _ = write!(
            self.overlay,
            r#"<g class="legend">{shape}<text x="{tx:.1}" y="{y:.1}" dy="0.32em" fill="{ink}">{label}</text></g>"#,
            tx = x + 16.0,
            ink = color::INK,
            label = esc(label),
        );
        self.legend_x += 16.0 + label.chars().count() as f64 * 6.6 + 18.0;
    }

    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</g>");
        self.out.push_str(&self.overlay);
        self.out.push_str("</svg>");
        self.out
    }
}

/// How to stroke a line.
pub(crate) struct Stroke<'a> {
    pub class: &'a str,
    pub color: &'a str,
    pub width: f64,
    pub opacity: f64,
    pub dashed: bool,
}

fn marker_svg(marker: Marker, cx: f64, cy: f64, color: &str, r: f64) -> String {
    match marker {
        Marker::Dot => {
            format!(
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="{color}" stroke="#ffffff" stroke-width="1"/>"##
            )
        }
        Marker::Ring => format!(
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
            r = r - 0.5
        ),
        Marker::Cross => {
            let d = r - 0.5;
            format!(
                r#"<path d="M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}" stroke="{color}" stroke-width="2" stroke-linecap="round"/>"#,
                cx - d,
                cy - d,
                cx + d,
                cy + d,
                cx - d,
                cy + d,
                cx + d,
                cy - d
            )
        }
        Marker::Line | Marker::Dash => format!(
            r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{color}" stroke-width="2.5"{dash}/>"#,
            cx - 7.0,
            cx + 7.0,
            dash = if marker == Marker::Dash {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
        ),
    }
}

/// A small horizontal bar (`fraction` of `width`), for table cells.
pub(crate) fn bar(fraction: f64, width: f64, color: &str, label: &str) -> String {
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    format!(
        r#"<svg class="bar" xmlns="http://www.w3.org/2000/svg" width="{width}" height="12" viewBox="0 0 {width} 12" role="img" aria-label="{label}"><rect x="0" y="1" width="{width}" height="10" rx="2" fill="{grid}"/><rect x="0" y="1" width="{w:.1}" height="10" rx="2" fill="{color}"/></svg>"#,
        grid = color::GRID,
        w = f * width,
        label = esc(label),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_have_round_ticks_covering_the_data() {
        let a = Axis::linear(0.512, 0.874, 5);
        assert_eq!((a.lo, a.hi, a.decimals), (0.5, 0.9, 1));
        assert_eq!(a.ticks.len(), 5);
        let flat = Axis::linear(0.8, 0.8, 4);
        assert!(flat.lo < 0.8 && flat.hi > 0.8);
        let i = Axis::integers(1, 23, 8, true);
        assert_eq!(i.ticks, vec![5.0, 10.0, 15.0, 20.0]);
        assert_eq!((i.lo, i.hi), (0.5, 23.5));
        assert_eq!(Axis::integers(1, 4, 8, false).ticks, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
