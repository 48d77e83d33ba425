//! Progress for people and for batch logs: an indicatif bar when stderr is a terminal,
//! otherwise plain timestamped lines (at the start of a stage, every 10 % of it or every 30 s),
//! nothing with --quiet. Stages count volumes, except the shell link, which counts shells.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Reporter {
    quiet: bool,
    terminal: bool,
    start: Instant,
    state: Mutex<State>,
}

struct State {
    stage: String,
    bar: Option<ProgressBar>,
    stage_start: Instant,
    last_line: Instant,
    last_decile: usize,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Reporter {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            start: now,
            state: Mutex::new(State {
                stage: String::new(),
                bar: None,
                stage_start: now,
                last_line: now,
                last_decile: 0,
            }),
        }
    }

    /// A one-off message (a log line; printed above the bar on a terminal).
    pub fn message(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!("[{:>7.1}s] {msg}", self.start.elapsed().as_secs_f64());
        match &st.bar {
            Some(b) => b.println(line),
            None => super::console::stderr_line(&line),
        }
    }

    /// `done` of `total` steps of `stage` are finished.
    pub fn update(&self, stage: &str, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let unit = unit(stage);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.stage != stage {
            if !self.terminal {
                // A stage that takes long before its first step completes is not silent.
                super::console::stderr_line(&format!(
                    "[{:>7.1}s] {stage}: started ({total} {unit}s)",
                    self.start.elapsed().as_secs_f64()
                ));
            }
            if let Some(b) = st.bar.take() {
                b.finish_and_clear();
            }
            st.stage = stage.to_string();
            st.stage_start = Instant::now();
            st.last_decile = 0;
            if self.terminal {
                let b = ProgressBar::new(total as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        &format!("{{msg:>14}} [{{bar:30}}] {{pos}}/{{len}} {unit}s  {{elapsed_precise}} ETA {{eta}}"),
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(stage.to_string());
                st.bar = Some(b);
            }
        }
        if let Some(b) = &st.bar {
            b.set_position(done as u64);
            if done == total {
                b.finish_and_clear();
                st.bar = None;
                drop(st);
                self.message(&format!("{stage}: {total} {unit}s done"));
            }
            return;
        }
        let decile = done * 10 / total.max(1);
        let now = Instant::now();
        if done == total
            || decile > st.last_decile
            || now.duration_since(st.last_line) >= Duration::from_secs(30)
        {
            st.last_decile = decile;
            st.last_line = now;
            let el = st.stage_start.elapsed().as_secs_f64();
            let eta = if done > 0 {
                el / done as f64 * (total - done) as f64
            } else {
                f64::NAN
            };
            super::console::stderr_line(&format!(
                "[{:>7.1}s] {stage}: {unit} {done}/{total}, stage elapsed {el:.1}s, ETA {eta:.0}s",
                self.start.elapsed().as_secs_f64()
            ));
        }
    }
}

/// What a stage counts: the shell link steps through shells, every other stage through volumes.
fn unit(stage: &str) -> &'static str {
    if stage.starts_with("shell link") {
        "shell"
    } else {
        "volume"
    }
}
