//! Resource limits checked before any work: worker threads and memory.

use nifreeze::{Error, Result};

/// Most threads `-j` may ask for per available core. More workers than a few per core only
/// add scheduling and memory overhead (each rayon worker reserves a stack), and an absurd
/// value (`-j 100000`) would spend tens of seconds creating threads before failing.
const THREADS_PER_CORE: usize = 4;
/// Absolute cap on `-j`, whatever the core count.
const MAX_THREADS: usize = 1024;

/// The worker count `-j N` asks for, or an input error when it is out of bounds
/// (`0` = every available core).
pub fn checked_threads(n: usize) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let limit = (THREADS_PER_CORE * cores).clamp(THREADS_PER_CORE, MAX_THREADS);
    if n > limit {
        return Err(Error::input(format!(
            "-j {n} is too many threads: at most {limit} ({THREADS_PER_CORE} × the {cores} available cores, \
             at most {MAX_THREADS}); use -j 0 for one per core"
        )));
    }
    Ok(if n == 0 { cores } else { n })
}

/// A rayon pool of `n` checked workers (`0` = all cores).
pub fn thread_pool(n: usize) -> Result<rayon::ThreadPool> {
    let n = checked_threads(n)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| Error::runtime(format!("cannot start {n} worker threads: {e}")))
}

/// Working memory (resident) on top of the series copies: model fits, registration
/// pyramids, one volume per worker. Measured: the 27-volume sample peaks at 61 MB resident
/// with 3 copies of its 12 MB series.
const WORKING_BYTES: u64 = 100_000_000;
/// Address space each worker thread reserves without touching it (glibc malloc arenas and the
/// thread's stack): it counts against `ulimit -v` only. With the binary's own mappings
/// ([`BASE_ADDRESS_BYTES`]) this matches the measurement: the sample (12 MB series) at -j 2
/// fails under `ulimit -v 300000` (KiB) on some runs and runs under 350000.
const PER_THREAD_ADDRESS_BYTES: u64 = 64_000_000;
const BASE_ADDRESS_BYTES: u64 = 16_000_000;

fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn proc_kb(file: &str, key: &str) -> Option<u64> {
    field_kb(&std::fs::read_to_string(file).ok()?, key)
}

/// The address-space limit (`ulimit -v`) in bytes, if any.
fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0
            && lim.rlim_cur != libc::RLIM_INFINITY
        {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
            return Some(lim.rlim_cur as u64);
        }
    }
    None
}

/// CPU seconds of the process so far (user + system, every thread; getrusage) and its peak
/// resident memory: the probe of the run's [`nifreeze::timing::Timeline`].
pub fn usage() -> nifreeze::timing::Usage {
    let mut cpu = None;
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            cpu = Some(s(ru.ru_utime) + s(ru.ru_stime));
        }
    }
    nifreeze::timing::Usage {
        cpu_seconds: cpu,
        peak_memory_mb: nifreeze::report::peak_memory_mb(),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// What a command keeps in memory at its peak, on top of [`WORKING_BYTES`]: float32 copies of
/// the whole series, plus float32 volumes of the series' grid per worker thread (each worker
/// registers, smooths and resamples whole volumes, and the allocator keeps an arena per thread).
#[derive(Clone, Copy, Debug)]
pub struct MemoryPlan {
    pub series_copies: f64,
    pub volumes_per_thread: f64,
}

/// `estimate`'s plan. Measured peaks (resident, benches/stages.sh and /usr/bin/time, dki, all
/// outputs, 2026-12-03; HCP on 5fea739, the others on 6d00254), in MB: the bench phantom (118 MB as float32, int16
/// on disk) 217 at `-j 2`; a UK Biobank-size series (367 MB; 3.5 MB per volume) 587 at `-j 2`
/// and 954 at `-j 8`; an HCP-size series (4133 MB; 14.3 MB per volume) 5481 at `-j 2`. The
/// two UKB runs give 17.5 volumes per added thread; the rest is 0.5 (bench), 1.0 (UKB) and
/// 1.2 (HCP) copies of the series. The plan adds a margin to both: 1.4 copies and 20 volumes
/// per thread (HCP at `-j 2`: 6460 MB planned for 5481; UKB at `-j 8`: 1174 for 954). The
/// earlier flat 2.2 copies planned 907 MB for UKB at `-j 8` (less than it took) and 9193 MB
/// for HCP at `-j 2`.
pub const ESTIMATE_MEMORY: MemoryPlan = MemoryPlan {
    series_copies: 1.4,
    volumes_per_thread: 20.0,
};

/// Refuse a run that cannot fit in memory before it starts, instead of an abort half-way.
/// `series_bytes` is one float32 copy of the series of `n_volumes` volumes and `plan` what the command keeps
/// at once, `threads` its workers. Checked against `cap` (`--max-memory`) when given, else
/// the system's available memory, and against the address-space limit (`ulimit -v`). Exit
/// code 1: the input is fine, the machine (or its limits) is too small. The estimate is
/// deliberately simple; allocations of the series buffers are fallible as well, so a miss
/// still ends in a one-line error.
pub fn check_memory(
    what: &str,
    series_bytes: u64,
    n_volumes: usize,
    plan: MemoryPlan,
    threads: usize,
    cap: Option<u64>,
) -> Result<()> {
    let volume_bytes = series_bytes / n_volumes.max(1) as u64;
    let per_thread = volume_bytes as f64 * plan.volumes_per_thread;
    let resident = ((series_bytes as f64 * plan.series_copies + per_thread * threads as f64)
        as u64)
        .saturating_add(WORKING_BYTES);
    let explain = format!(
        "{} × the {} series as float32 + {} per thread for {threads} threads + {} working memory",
        plan.series_copies,
        mb(series_bytes),
        mb(per_thread as u64),
        mb(WORKING_BYTES)
    );
    if let Some(cap) = cap {
        if resident > cap {
            return Err(Error::runtime(format!(
                "not enough memory: {what} needs about {} ({explain}) but --max-memory allows {}; \
                 raise --max-memory or use a larger machine",
                mb(resident),
                mb(cap)
            )));
        }
    } else if let Some(avail) = proc_kb("/proc/meminfo", "MemAvailable:").map(|kb| kb * 1024) {
        if resident > avail {
            return Err(Error::runtime(format!(
                "not enough memory: {what} needs about {} ({explain}) but only {} is available; \
                 free memory or use a larger machine",
                mb(resident),
                mb(avail)
            )));
        }
    }
    if let Some(limit) = address_space_limit() {
        let need = resident
            .saturating_add(PER_THREAD_ADDRESS_BYTES.saturating_mul(threads as u64 + 1))
            .saturating_add(BASE_ADDRESS_BYTES);
        if need > limit {
            return Err(Error::runtime(format!(
                "not enough memory: {what} needs about {} of address space ({explain}, \
                 {} per thread for {threads} threads) but ulimit -v allows {}; \
                 raise the limit (or use fewer threads)",
                mb(need),
                mb(PER_THREAD_ADDRESS_BYTES),
                mb(limit)
            )));
        }
    }
    Ok(())
}
