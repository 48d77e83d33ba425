//! The output folder of `estimate --out`: every path decision of a run in one place.
//!
//! A run into a folder must never touch its inputs, never mix its files with another run's, and
//! never leave a folder that looks complete when it is not. So, before any work is done,
//! [`OutputFolder::prepare`]:
//!
//! 1. compares every input (the series, gradient files, sidecars, mask) with every file the run
//!    may write or delete — by canonical path, by the path as given (a symbolic link in the
//!    folder would be replaced), and by (device, inode) (a hard link) — and refuses any clash;
//! 2. creates the folder if needed and takes an exclusive lock on `.nifreeze-rs.lock` in it
//!    (an OS file lock, released by the kernel when a run dies, so a stale lock file of a killed
//!    run is simply taken over; the file holds the pid for the message);
//! 3. refuses a folder that holds a complete earlier run (its `summary.json`) unless `force`;
//! 4. removes the hidden `.NAME.PID.tmp` files that killed runs left behind.
//!
//! [`OutputFolder::begin_writing`] then removes what marks or could pass for an earlier run's
//! result (its summary.json first, outputs this run will not rewrite), right before the first
//! byte is written — so a run that fails while computing leaves an earlier run intact.
//! A run that fails removes its lock and the (empty) folders it created.

use crate::io::atomic::{remove_stale, write_text};
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Files the run writes at the top of the folder (those of the corrected series are deleted
/// instead with `--no-resample`, so that an earlier run's series cannot pass for this one's).
pub const FILES: &[&str] = &[
    "motion.tsv",
    "transforms.tfm",
    "transforms.x5",
    "brainmask.nii.gz",
    "dwi_corrected.nii.gz",
    "dwi_corrected.bval",
    "dwi_corrected.bvec",
    "dwi_corrected.b",
    "report.svg",
    "outliers.tsv",
    SUMMARY,
];

/// The corrected series and its gradient tables (not written with `--no-resample`).
pub const CORRECTED: &[&str] = &[
    "dwi_corrected.nii.gz",
    "dwi_corrected.bval",
    "dwi_corrected.bvec",
    "dwi_corrected.b",
];

/// Written last: its presence marks a complete run.
pub const SUMMARY: &str = "summary.json";

/// Folder of the per-volume transforms `vol-NNNN.tfm` (and `.mat`).
pub const XFM_DIR: &str = "xfm";

/// The lock file; hidden, removed when the run ends.
pub const LOCK: &str = ".nifreeze-rs.lock";

/// Where in the output folder a file lies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Top,
    Xfm,
}

/// `vol-NNNN.tfm` or `vol-NNNN.mat`: the per-volume transforms, with their index.
fn xfm_index(name: &str) -> Option<usize> {
    let stem = name
        .strip_prefix("vol-")?
        .strip_suffix(".tfm")
        .or_else(|| name.strip_prefix("vol-")?.strip_suffix(".mat"))?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// `.NAME.PID.tmp` (the temporary names of [`crate::io::atomic::write_atomic`]): NAME and PID.
fn temporary_of(name: &str) -> Option<(&str, u32)> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (target, pid) = inner.rsplit_once('.')?;
    if target.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((target, pid.parse().ok()?))
}

/// Whether the run may write or delete the file `name` in `place`.
fn owned(place: Place, name: &str) -> bool {
    let direct = |n: &str| match place {
        Place::Top => FILES.contains(&n) || n == LOCK,
        Place::Xfm => xfm_index(n).is_some(),
    };
    direct(name) || temporary_of(name).is_some_and(|(target, _)| direct(target))
}

/// Whether process `pid` is running. Where that cannot be known (no /proc), it is assumed to
/// be, so that nothing of a live run is ever removed.
fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// (device, inode) of the file `p` resolves to, where the platform has them.
#[cfg(unix)]
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_p: &Path) -> Option<(u64, u64)> {
    None
}

/// An input of the run, as given and as resolved.
struct Input {
    /// E.g. "the DWI series", "--mask".
    role: String,
    given: PathBuf,
    /// The path with its folder resolved and its own name kept (a link is not followed).
    lexical: Option<PathBuf>,
    /// The path with every link resolved.
    canonical: Option<PathBuf>,
    id: Option<(u64, u64)>,
}

impl Input {
    fn new(role: &str, given: &Path) -> Self {
        let parent = match given.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let lexical = given
            .file_name()
            .and_then(|n| fs::canonicalize(&parent).ok().map(|p| p.join(n)));
        Input {
            role: role.to_string(),
            given: given.to_path_buf(),
            lexical,
            canonical: fs::canonicalize(given).ok(),
            id: file_id(given),
        }
    }
}

/// The `--out` folder of one `estimate` run, locked for the run's lifetime.
pub struct OutputFolder {
    dir: PathBuf,
    /// Folders this run created, outermost first: removed again if the run fails and they are
    /// empty.
    created: Vec<PathBuf>,
    lock: Option<File>,
    inputs: Vec<Input>,
    finished: bool,
}

impl OutputFolder {
    /// Check `dir` against the `inputs` (role, path), create and lock it, and clear what dead
    /// runs left; see the module doc. `force` allows replacing a complete earlier run.
    /// Returns the folder and warnings for the user.
    pub fn prepare(dir: &Path, inputs: &[(&str, &Path)], force: bool) -> Result<Self> {
        let inputs: Vec<Input> = inputs.iter().map(|(r, p)| Input::new(r, p)).collect();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::input(format!(
                "--out {} exists and is not a folder: choose a folder name",
                dir.display()
            )));
        }
        let xfm = dir.join(XFM_DIR);
        if xfm.exists() && !xfm.is_dir() {
            return Err(Error::input(format!(
                "{} exists and is not a folder; estimate writes its per-volume transforms there: \
                 move it or choose another --out",
                xfm.display()
            )));
        }
        check_inputs(dir, &inputs)?;

        let created = create_dirs(dir)?;
        let mut folder = OutputFolder {
            dir: dir.to_path_buf(),
            created,
            lock: None,
            inputs,
            finished: false,
        };
        folder.lock = Some(folder.acquire_lock()?);
        if folder.dir.join(SUMMARY).exists() && !force {
            return Err(Error::input(format!(
                "{} already holds a complete earlier run ({SUMMARY}): pass --force to replace it, \
                 or choose another --out",
                dir.display()
            )));
        }
        folder.remove_dead_temporaries()?;
        Ok(folder)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of output `name` (one of [`FILES`]).
    pub fn path(&self, name: &str) -> PathBuf {
        debug_assert!(
            owned(Place::Top, name),
            "{name} is not an output of estimate"
        );
        self.dir.join(name)
    }

    /// The path of volume `k`'s transform file with extension `ext` ("tfm", "mat").
    pub fn xfm_path(&self, k: usize, ext: &str) -> PathBuf {
        self.dir.join(XFM_DIR).join(format!("vol-{k:04}.{ext}"))
    }

    /// Write output `name` (one of [`FILES`]) atomically.
    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        write_text(&self.path(name), text)
    }

    /// Refuse an output outside the folder (e.g. a file prefix given by another option) that
    /// is one of the inputs, by the same rules as the folder's own files.
    pub fn check_external(&self, output: &Path) -> Result<()> {
        let out = Input::new("output", output);
        for inp in &self.inputs {
            if same_file(&out, inp) {
                return Err(clash(inp, output));
            }
        }
        Ok(())
    }

    /// Remove what could pass for an earlier run's result, right before this run writes:
    /// summary.json first (it marks a complete run), the corrected series when it will not be
    /// rewritten (`resample` false).
    pub fn begin_writing(&self, resample: bool) -> Result<()> {
        remove_stale(&self.dir.join(SUMMARY))?;
        if !resample {
            for name in CORRECTED {
                remove_stale(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Create the per-volume transform folder.
    pub fn create_xfm_dir(&mut self) -> Result<PathBuf> {
        let xfm = self.dir.join(XFM_DIR);
        if !xfm.is_dir() {
            fs::create_dir(&xfm).map_err(|e| {
                Error::runtime(format!("cannot create folder {}: {e}", xfm.display()))
            })?;
            self.created.push(xfm.clone());
        }
        Ok(xfm)
    }

    /// Remove per-volume transforms with index ≥ `n`: left by an earlier run on a longer
    /// series, they would pass for transforms of this one.
    pub fn remove_surplus_transforms(&self, n: usize) -> Result<()> {
        let xfm = self.dir.join(XFM_DIR);
        for (path, name) in list(&xfm) {
            if xfm_index(&name).is_some_and(|k| k >= n) {
                remove_stale(&path)?;
            }
        }
        Ok(())
    }

    /// The run is complete (summary.json written): release the lock, keep everything.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.release_lock();
        Ok(())
    }

    /// Take the folder's lock: an exclusive OS lock on the lock file, which holds our pid.
    fn acquire_lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK);
        // A finishing run removes the lock file while holding it; whoever opened the old file
        // meanwhile holds a lock on a removed file and must retry on the new one.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| {
                    Error::input(format!(
                        "cannot create the lock file {} in --out: {e}; choose a writable folder",
                        path.display()
                    ))
                })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = match text.trim().parse::<u32>() {
                        Ok(pid) => format!("another nifreeze-rs run (pid {pid})"),
                        Err(_) => "another nifreeze-rs run".to_string(),
                    };
                    return Err(Error::input(format!(
                        "{holder} is writing to {}: wait for it to finish, or choose another --out",
                        self.dir.display()
                    )));
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(Error::runtime(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )))
                }
            }
            let still_there = match (file_id_of(&file), file_id(&path)) {
                (Some(a), Some(b)) => a == b,
                (None, None) => path.exists(),
                _ => false,
            };
            if !still_there {
                continue;
            }
            let io = |e: std::io::Error| {
                Error::runtime(format!(
                    "cannot write the lock file {}: {e}",
                    path.display()
                ))
            };
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            file.flush().map_err(io)?;
            return Ok(file);
        }
        Err(Error::runtime(format!(
            "cannot lock {}: the lock file keeps being replaced",
            path.display()
        )))
    }

    /// Remove the lock file while still holding the lock, then release it.
    fn release_lock(&mut self) {
        if let Some(file) = self.lock.take() {
            let _ = fs::remove_file(self.dir.join(LOCK));
            let _ = file.unlock();
        }
    }

    /// Remove `.NAME.PID.tmp` files of our outputs whose writer is no longer running.
    fn remove_dead_temporaries(&self) -> Result<()> {
        for (place, folder) in [
            (Place::Top, self.dir.clone()),
            (Place::Xfm, self.dir.join(XFM_DIR)),
        ] {
            for (path, name) in list(&folder) {
                if let Some((target, pid)) = temporary_of(&name) {
                    if owned(place, target) && !pid_alive(pid) {
                        remove_stale(&path)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for OutputFolder {
    /// A failed run: release the lock and remove the folders it created if they are empty.
    fn drop(&mut self) {
        self.release_lock();
        if !self.finished {
            for d in self.created.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

#[cfg(unix)]
fn file_id_of(f: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id_of(_f: &File) -> Option<(u64, u64)> {
    None
}

/// Entries of `dir` as (path, file name); empty when it cannot be listed.
fn list(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_name().to_str()?.to_string())))
        .collect()
}

/// Create `dir` and its missing parents; returns the folders created, outermost first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    missing.reverse();
    fs::create_dir_all(dir).map_err(|e| {
        Error::input(format!(
            "cannot create output folder {}: {e}",
            dir.display()
        ))
    })?;
    Ok(missing)
}

fn same_file(a: &Input, b: &Input) -> bool {
    let paths = |x: &Input| [x.lexical.clone(), x.canonical.clone()];
    let by_path = paths(a)
        .iter()
        .flatten()
        .any(|p| paths(b).iter().flatten().any(|q| p == q));
    let by_id = matches!((a.id, b.id), (Some(x), Some(y)) if x == y);
    by_path || by_id
}

fn clash(inp: &Input, output: &Path) -> Error {
    Error::input(format!(
        "{} {} is also an output of this run ({}): it would be overwritten or deleted; \
         move the input or choose another --out",
        inp.role,
        inp.given.display(),
        output.display()
    ))
}

/// Refuse any input that is, or would be replaced by, a file the run writes or deletes in
/// `dir`: by name (canonical folder + name, with and without following links) and by
/// (device, inode) against every such file that exists.
fn check_inputs(dir: &Path, inputs: &[Input]) -> Result<()> {
    let Ok(top) = fs::canonicalize(dir) else {
        // The folder does not exist yet: nothing in it can be an input.
        return Ok(());
    };
    let xfm = fs::canonicalize(dir.join(XFM_DIR)).ok();
    let place_of = |p: &Path| -> Option<(Place, String)> {
        let parent = p.parent()?;
        let name = p.file_name()?.to_str()?.to_string();
        if parent == top {
            Some((Place::Top, name))
        } else if xfm.as_deref() == Some(parent) {
            Some((Place::Xfm, name))
        } else {
            None
        }
    };
    for inp in inputs {
        for p in [&inp.lexical, &inp.canonical].into_iter().flatten() {
            if let Some((place, name)) = place_of(p) {
                if owned(place, &name) {
                    let out = match place {
                        Place::Top => dir.join(&name),
                        Place::Xfm => dir.join(XFM_DIR).join(&name),
                    };
                    return Err(clash(inp, &out));
                }
            }
        }
    }
    // Hard links (and links from the folder to an input) under an output's name.
    for (place, folder) in [
        (Place::Top, dir.to_path_buf()),
        (Place::Xfm, dir.join(XFM_DIR)),
    ] {
        for (path, name) in list(&folder) {
            if !owned(place, &name) {
                continue;
            }
            let Some(id) = file_id(&path) else { continue };
            if let Some(inp) = inputs.iter().find(|i| i.id == Some(id)) {
                return Err(clash(inp, &path));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_run_owns() {
        assert!(owned(Place::Top, "motion.tsv"));
        assert!(owned(Place::Top, ".motion.tsv.123.tmp"));
        assert!(owned(Place::Top, LOCK));
        assert!(!owned(Place::Top, "dwi.nii.gz"));
        assert!(!owned(Place::Top, ".dwi.nii.gz.12.tmp"));
        assert!(!owned(Place::Top, "vol-0001.tfm"));
        assert!(owned(Place::Xfm, "vol-0001.tfm"));
        assert!(owned(Place::Xfm, "vol-12345.mat"));
        assert!(owned(Place::Xfm, ".vol-0001.tfm.99.tmp"));
        assert!(!owned(Place::Xfm, "vol-.tfm"));
        assert!(!owned(Place::Xfm, "vol-00a1.tfm"));
        assert!(!owned(Place::Xfm, "motion.tsv"));
        assert_eq!(temporary_of(".a.b.42.tmp"), Some(("a.b", 42)));
        assert_eq!(temporary_of(".a.tmp"), None);
        assert_eq!(temporary_of(".a.x1.tmp"), None);
        assert_eq!(xfm_index("vol-0027.tfm"), Some(27));
    }
}
