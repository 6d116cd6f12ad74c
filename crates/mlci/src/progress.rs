//! Progress reporting for training: one JSON line per epoch on stdout (the
//! output contract), and for people either a progress bar (stderr is a
//! terminal) or plain log lines (a Jenkins console).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use mlci_core::protocol::{EpochEvent, Event};
use mlci_core::{Architecture, EpochMetrics};
use mlci_train::{Control, Observer};

#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    interactive: bool,
    epochs: usize,
    loss_sum: f64,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            bar: None,
            interactive: std::io::stderr().is_terminal(),
            epochs: 0,
            loss_sum: 0.0,
        }
    }
}

impl Observer for Progress {
    fn run_started(&mut self, arch: &Architecture, resumed_from: usize) {
        tracing::info!(
            params = arch.param_count(),
            layers = arch.layers.len(),
            "model built"
        );
        if resumed_from > 0 {
            tracing::info!(epoch = resumed_from, "resumed after epoch");
        }
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.epochs = epochs;
        self.loss_sum = 0.0;
        if self.interactive {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches {msg} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }

    fn batch_done(&mut self, batch: usize, loss: f64) {
        self.loss_sum += loss;
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            bar.set_message(format!("loss {:.4}", self.loss_sum / batch as f64));
        }
    }

    fn epoch_done(&mut self, m: &EpochMetrics) -> Control {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!(
            epoch = m.epoch,
            loss = format_args!("{:.4}", m.loss),
            accuracy = format_args!("{:.4}", m.accuracy),
            val_loss = format_args!("{:.4}", m.val_loss),
            val_accuracy = format_args!("{:.4}", m.val_accuracy),
            seconds = format_args!("{:.1}", m.seconds),
            images_per_second = format_args!("{:.0}", m.images_per_second),
            "epoch {}/{} done",
            m.epoch,
            self.epochs
        );
        emit_event(&Event::Epoch(EpochEvent {
            metrics: *m,
            epochs: self.epochs,
        }));
        Control::Continue
    }
}

/// Write one JSON line to stdout and flush, so a pipe sees it at once.
pub(crate) fn emit(value: &serde_json::Value) {
    write_line(&value.to_string());
}

/// Write one event of the output protocol (`mlci_core::protocol`) as a line.
pub(crate) fn emit_event(event: &Event) {
    write_line(&event.to_line());
}

fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not abort training.
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}
