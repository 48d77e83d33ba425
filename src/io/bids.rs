//! BIDS: the parts of a series' name and JSON sidecar that outputs depend on.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// File name of `path` without `.nii.gz` / `.nii` (`sub-01_dwi.nii.gz` → `sub-01_dwi`).
pub fn series_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name)
        .to_string()
}

/// The JSON sidecar beside a series (`sub-01_dwi.nii.gz` → `sub-01_dwi.json`).
pub fn sidecar_json(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}.json", series_stem(path)))
}

/// The sidecar's `PhaseEncodingDirection` (`i`, `j`, `k`, optionally with `-`) as a voxel axis
/// 0, 1, 2. `None` when there is no sidecar, no such field, or a value BIDS does not define.
pub fn phase_encoding_axis(path: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(sidecar_json(path)).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    parse_phase_encoding(json.get("PhaseEncodingDirection")?.as_str()?)
}

/// The sidecar's `SliceEncodingDirection` as a voxel axis 0, 1, 2 (the axis slices were
/// acquired along); `None` when absent or not a BIDS value.
pub fn slice_encoding_axis(path: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(sidecar_json(path)).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    parse_phase_encoding(json.get("SliceEncodingDirection")?.as_str()?)
}

/// `i`/`j`/`k` (with an optional trailing `-`) → 0/1/2.
pub fn parse_phase_encoding(s: &str) -> Option<usize> {
    match s.trim().trim_end_matches('-') {
        "i" => Some(0),
        "j" => Some(1),
        "k" => Some(2),
        _ => None,
    }
}
