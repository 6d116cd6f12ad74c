//! The report's charts: search progress (every trial's value and the best
//! so far) and the learning curves.

use std::fmt::Write;

use mlci_core::{TrialRecord, TrialState};

use super::state_color;
use crate::summary::{finite, Summary};
use crate::svg::{color, Axis, Chart, Frame, Marker, Stroke};
use crate::text::{class_name, esc, one_line, param, value};

/// A data range: Tukey's fences (3 IQR) clipped to the data, so one
/// diverged trial does not flatten every other line.
fn robust_range(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let (min, max) = (values[0], values[values.len() - 1]);
    if values.len() < 8 {
        return (min, max);
    }
    let q = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    let (q1, q3) = (q(0.25), q(0.75));
    let iqr = q3 - q1;
    if iqr <= 0.0 {
        return (min, max);
    }
    ((q1 - 3.0 * iqr).max(min), (q3 + 3.0 * iqr).min(max))
}

pub(super) fn progress(o: &mut String, s: &Summary<'_>) {
    o.push_str("<section id=\"progress\">\n<h2>Search progress</h2>\n");
    let Some(last) = s.trials.last().map(|t| t.number) else {
        o.push_str("<p class=\"empty\">No trials yet.</p>\n</section>\n");
        return;
    };
    let first = s.trials[0].number;
    let best_so_far = &s.best_so_far;
    let mut ys: Vec<f64> = s
        .trials
        .iter()
        .filter(|t| t.state != TrialState::Failed)
        .filter_map(|t| finite(t.value))
        .chain(best_so_far.iter().map(|(_, v)| *v))
        .chain(s.goal)
        .collect();
    let any_value = !ys.is_empty();
    let (lo, hi) = if any_value {
        robust_range(&mut ys)
    } else {
        (0.0, 1.0)
    };
    let frame = Frame {
        id: "progress",
        label: &format!("{} of each trial and the best so far, by trial number", s.metric),
        width: 1080.0,
        height: 330.0,
        x_title: "trial",
        y_title: s.metric,
        right_margin: 24.0,
    };
    let x = Axis::integers(first, last, 12, true);
    let mut c = Chart::new(&frame, x, Axis::linear(lo, hi, 5));
    let (ylo, yhi) = c.y_range();
    if let Some(g) = s.goal {
        c.hline(g, color::GOAL, "goal", &format!("goal {}", value(g)));
    }
    let mut step = Vec::new();
    for (i, (n, v)) in best_so_far.iter().enumerate() {
        if i > 0 {
            step.push((f64::from(*n), best_so_far[i - 1].1));
        }
        step.push((f64::from(*n), *v));
    }
    let best_stroke = Stroke {
        class: "best-so-far",
        color: color::BEST,
        width: 2.0,
        opacity: 0.9,
        dashed: false,
    };
    c.line(&step, &best_stroke, "best so far");
    for t in &s.trials {
        let n = f64::from(t.number);
        let (marker, y) = match (t.state, finite(t.value)) {
            (TrialState::Failed, _) | (_, None) if t.state.is_finished() => (Marker::Cross, ylo),
            (_, None) => continue,
            (TrialState::Completed, Some(v)) => (Marker::Dot, v),
            (_, Some(v)) => (Marker::Ring, v),
        };
        let y = y.clamp(ylo, yhi);
        c.marker(
            n,
            y,
            marker,
            state_color(t.state),
            &format!("pt s-{}", t.state.as_str()),
            &tip(s, t),
        );
    }
    if let (Some(b), Some(v)) = (s.best, s.best_value) {
        c.halo(f64::from(b.number), v, color::BEST);
    }
    legend_states(&mut c, s);
    if !best_so_far.is_empty() {
        c.legend(Marker::Line, color::BEST, "best so far");
    }
    if s.goal.is_some() {
        c.legend(Marker::Dash, color::GOAL, "goal");
    }
    if !any_value {
        c.note("no trial has a value yet");
    }
    w!(
        o,
        "<figure>\n{}\n<figcaption>Each trial's {} (pruned trials: best value before they were stopped; \
         failed trials on the bottom edge) and the best completed value so far. The ringed point is the \
         chosen trial. Hover a point for its parameters.</figcaption>\n</figure>\n</section>\n",
        c.finish(),
        esc(s.metric),
    );
}

fn legend_states(c: &mut Chart, s: &Summary<'_>) {
    let present = |st: TrialState| s.trials.iter().any(|t| t.state == st);
    for (st, marker) in [
        (TrialState::Completed, Marker::Dot),
        (TrialState::Pruned, Marker::Ring),
        (TrialState::Stopped, Marker::Ring),
        (TrialState::Failed, Marker::Cross),
        (TrialState::Running, Marker::Ring),
    ] {
        if present(st) {
            c.legend(marker, state_color(st), st.as_str());
        }
    }
}

/// The tooltip of a trial: number, state, value, parameters, failure.
fn tip(s: &Summary<'_>, t: &TrialRecord) -> String {
    let mut tip = format!("trial {} · {}", t.number, t.state.as_str());
    if let Some(v) = finite(t.value) {
        w!(tip, " · {} {}", s.metric, value(v));
    }
    for (k, v) in &t.params {
        w!(tip, "\n{k} = {}", param(v));
    }
    if let Some(f) = &t.failure {
        w!(tip, "\n{}: {}", f.kind.as_str(), one_line(&f.message, 160));
    }
    tip
}

pub(super) fn curves(o: &mut String, s: &Summary<'_>) {
    o.push_str("<section id=\"curves\">\n<h2>Learning curves</h2>\n");
    let mut charts = Vec::new();
    if let Some(svg) = curve_chart(s, s.metric, true) {
        charts.push(svg);
    }
    if let Some(loss) = s.loss_metric() {
        if let Some(svg) = curve_chart(s, loss, false) {
            charts.push(svg);
        }
    }
    if charts.is_empty() {
        w!(
            o,
            "<p class=\"empty\">No trial has reported {} per step yet.</p>\n",
            esc(s.metric)
        );
    } else {
        o.push_str("<div class=\"charts\">\n");
        for svg in charts {
            w!(o, "<figure>\n{svg}\n</figure>\n");
        }
        o.push_str(
            "</div>\n<p class=\"caption\">One line per trial, coloured by state; the chosen trial is \
                    drawn dark and labelled. Hover a line to see which trial it is.</p>\n",
        );
    }
    o.push_str("</section>\n");
}

fn curve_chart(s: &Summary<'_>, metric: &str, objective: bool) -> Option<String> {
    let curves: Vec<(&TrialRecord, Vec<(f64, f64)>)> = s
        .trials
        .iter()
        .map(|t| {
            let pts = t
                .curve(metric)
                .into_iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(step, v)| (step as f64, v))
                .collect::<Vec<_>>();
            (*t, pts)
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    if curves.is_empty() {
        return None;
    }
    let max_step = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let mut ys: Vec<f64> = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .collect();
    if objective {
        ys.extend(s.goal);
    }
    let (lo, hi) = robust_range(&mut ys);
    let label = format!("{metric} per step, one line per trial");
    let frame = Frame {
        id: &format!("curve-{}", class_name(metric)),
        label: &label,
        width: 530.0,
        height: 300.0,
        x_title: "step (epoch)",
        y_title: metric,
        right_margin: 64.0,
    };
    let x = Axis::integers(1, max_step.min(f64::from(u32::MAX)) as u32, 8, false);
    let mut c = Chart::new(&frame, x, Axis::linear(lo, hi, 5));
    let (ylo, yhi) = c.y_range();
    if objective {
        if let Some(g) = s.goal {
            c.hline(g, color::GOAL, "goal", &format!("goal {}", value(g)));
        }
    }
    let best = s.best.map(|b| b.number);
    let order = |st: TrialState| match st {
        TrialState::Failed => 0,
        TrialState::Pruned | TrialState::Stopped => 1,
        TrialState::Pending | TrialState::Running => 2,
        TrialState::Completed => 3,
    };
    // Fainter lines as they multiply, so the bundle stays readable.
    let faint = (0.6 * (12.0 / curves.len() as f64).sqrt()).clamp(0.18, 0.6);
    let mut sorted: Vec<&(&TrialRecord, Vec<(f64, f64)>)> = curves.iter().collect();
    sorted.sort_by_key(|(t, _)| (Some(t.number) == best, order(t.state), t.number));
    for (t, pts) in sorted {
        let is_best = Some(t.number) == best;
        let stroke = Stroke {
            class: if is_best { "curve best" } else { "curve" },
            color: if is_best {
                color::BEST
            } else {
                state_color(t.state)
            },
            width: if is_best { 2.6 } else { 1.4 },
            opacity: if is_best { 1.0 } else { faint },
            dashed: false,
        };
        let name = format!("trial {} · {} · {}", t.number, t.state.as_str(), metric);
        c.line(pts, &stroke, &name);
        let (lx, ly) = pts[pts.len() - 1];
        if t.state != TrialState::Completed || is_best || pts.len() == 1 {
            let marker = match t.state {
                TrialState::Failed => Marker::Cross,
                TrialState::Completed => Marker::Dot,
                _ => Marker::Ring,
            };
            c.marker(lx, ly.clamp(ylo, yhi), marker, stroke.color, "end", &name);
        }
        if is_best {
            c.end_label(lx, ly, color::BEST, &format!("trial {}", t.number));
        }
    }
    legend_states(&mut c, s);
    Some(c.finish())
}
