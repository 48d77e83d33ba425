//! Per-stage wall time and memory high-water mark of a run.
//!
//! Why: the run's cost is spread over stages that surround the model (resampling, outlier
//! detection, writing), and a profile per stage is what tells where a change pays off; it is
//! kept in summary.json and printed at the end of the log, so every run is its own profile.
//!
//! With the CPU time of each stage beside its wall time, the ratio says how many cores the
//! stage kept busy, and CPU seconds compare runs made at different machine loads far better
//! than wall seconds.
//!
//! Stages are non-overlapping and recorded in the order they finish: their seconds add up to
//! the run's wall time (minus the few untimed moments between stages). A stage timed twice
//! (e.g. a refit after outliers are found) accumulates under one name. The memory probe is
//! injected by the caller (reading /proc is the command layer's business, not the numerics').

use std::sync::Mutex;
use std::time::Instant;

/// One finished stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRecord {
    pub stage: String,
    pub seconds: f64,
    /// CPU seconds (user + system, all threads) the process spent in the stage.
    pub cpu_seconds: Option<f64>,
    /// The process's peak resident memory (MiB) when the stage ended, if a probe was given.
    pub peak_memory_mb: Option<f64>,
}

/// What the injected probe reports: the process's CPU seconds so far and its peak memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub peak_memory_mb: Option<f64>,
}

type Probe<'a> = &'a (dyn Fn() -> Usage + Sync);

/// The start of a stage: wall clock and CPU time.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    t: Instant,
    cpu: Option<f64>,
}

/// Collects [`StageRecord`]s; shareable across threads.
pub struct Timeline<'a> {
    records: Mutex<Vec<StageRecord>>,
    probe: Option<Probe<'a>>,
}

impl Default for Timeline<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Timeline<'a> {
    /// A timeline that only collects times (no memory probe).
    pub fn new() -> Self {
        Timeline {
            records: Mutex::new(Vec::new()),
            probe: None,
        }
    }

    /// A timeline that asks `probe` for CPU time and peak memory at both ends of every stage.
    pub fn with_probe(probe: Probe<'a>) -> Self {
        Timeline {
            records: Mutex::new(Vec::new()),
            probe: Some(probe),
        }
    }

    fn usage(&self) -> Usage {
        self.probe.map(|p| p()).unwrap_or_default()
    }

    /// The start of a stage, for [`Timeline::record`].
    pub fn mark(&self) -> Mark {
        Mark {
            t: Instant::now(),
            cpu: self.usage().cpu_seconds,
        }
    }

    /// Run `f` as stage `stage` and record it.
    pub fn time<T>(&self, stage: &str, f: impl FnOnce() -> T) -> T {
        let m = self.mark();
        let out = f();
        self.record(stage, m);
        out
    }

    /// Record `stage` as running from `since` until now (added to an earlier record of the
    /// same name).
    pub fn record(&self, stage: &str, since: Mark) {
        let seconds = since.t.elapsed().as_secs_f64();
        let now = self.usage();
        let cpu = match (since.cpu, now.cpu_seconds) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        match r.iter_mut().find(|s| s.stage == stage) {
            Some(s) => {
                s.seconds += seconds;
                s.cpu_seconds = match (s.cpu_seconds, cpu) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                s.peak_memory_mb = now.peak_memory_mb.or(s.peak_memory_mb);
            }
            None => r.push(StageRecord {
                stage: stage.to_string(),
                seconds,
                cpu_seconds: cpu,
                peak_memory_mb: now.peak_memory_mb,
            }),
        }
    }

    /// Every stage recorded so far, in the order each was first recorded.
    pub fn records(&self) -> Vec<StageRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_accumulate_by_name_in_first_seen_order() {
        // a probe whose CPU clock advances by 1 s per call
        let calls = Mutex::new(0.0);
        let probe = || {
            let mut c = calls.lock().unwrap();
            *c += 1.0;
            Usage {
                cpu_seconds: Some(*c),
                peak_memory_mb: Some(12.5),
            }
        };
        let t = Timeline::with_probe(&probe);
        for stage in ["a", "b", "a"] {
            let m = t.mark();
            t.record(stage, m);
        }
        let v: i32 = t.time("c", || 7);
        assert_eq!(v, 7);
        let r = t.records();
        let names: Vec<&str> = r.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(r[0].cpu_seconds, Some(2.0), "two stages of 1 s each");
        assert_eq!(r[1].cpu_seconds, Some(1.0));
        assert_eq!(r[1].peak_memory_mb, Some(12.5));
        assert!(r.iter().all(|s| s.seconds >= 0.0 && s.seconds < 10.0));
        let plain = Timeline::new();
        plain.time("x", || ());
        assert_eq!(plain.records()[0].cpu_seconds, None);
    }
}
