//! The live progress line shown while a run is going, only when stdout is a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// The bar counts requests (`-n`) rather than elapsed seconds (`-d`).
    by_count: bool,
    started: Instant,
    last: (Instant, u64),
}

impl Progress {
    pub fn start(duration: Option<Duration>, requests: Option<u64>, warmup: Duration) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        let (template, by_count) = match (duration, requests) {
            (_, Some(n)) => {
                bar.set_length(n);
                ("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}", true)
            }
            (Some(d), None) => {
                bar.set_length((d + warmup).as_secs().max(1));
                ("{elapsed_precise} [{bar:30}] {msg}", false)
            }
            (None, None) => ("{spinner} {elapsed_precise} {msg}", false),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let now = Instant::now();
        Progress {
            bar,
            by_count,
            started: now,
            last: (now, 0),
        }
    }

    /// Shows `done` measured requests (of which `errors` failed) so far.
    pub fn update(&mut self, done: u64, errors: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last.0).as_secs_f64();
        if dt < 0.5 {
            return;
        }
        let rate = done.saturating_sub(self.last.1) as f64 / dt;
        self.last = (now, done);
        if self.by_count {
            self.bar.set_position(done);
        } else {
            self.bar.set_position(self.started.elapsed().as_secs());
        }
        self.bar
            .set_message(format!("{done} requests, {rate:.0} req/s, {errors} errors"));
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
