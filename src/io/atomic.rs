//! Atomic file output: write to a temporary file in the destination folder, then rename.
//!
//! A failed or interrupted run therefore never leaves a half-written file under the final
//! name, and a reader never sees a partial file. Inputs are protected: writing over a file
//! that was read as input is refused.

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write `path` atomically; `fill` streams the content into the buffered temporary file.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::input(format!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{}.{}.tmp", name, std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::runtime(format!(
            "cannot write {}: {e}",
            path.display()
        )));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::runtime(format!("cannot write {}: {e}", path.display()))
    })
}

/// Write a text file atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// Refuse to write `output` when it is one of the `inputs` (same file after resolving links).
pub fn ensure_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let out = fs::canonicalize(output).ok();
    for inp in inputs {
        if let (Some(o), Ok(i)) = (&out, fs::canonicalize(inp)) {
            if *o == i {
                return Err(Error::input(format!(
                    "refusing to overwrite input file {}: choose another output name",
                    inp.display()
                )));
            }
        }
    }
    Ok(())
}

/// Create the output folder (and parents) if it does not exist.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| {
        Error::input(format!(
            "cannot create output folder {}: {e}",
            dir.display()
        ))
    })
}

/// Remove `path` if it exists: an output of an earlier run into the same folder that this run
/// will not rewrite, and that must not pass for one of its results.
pub fn remove_stale(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::runtime(format!(
            "cannot remove {} left by an earlier run: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}
