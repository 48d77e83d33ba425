//! BIDS: the parts of a series' name and JSON sidecar that outputs depend on.

use crate::image::Grid;
use crate::{Error, Result};
use nalgebra::Vector3;
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
    sidecar_axis(path, "PhaseEncodingDirection")
}

/// The sidecar's `SliceEncodingDirection` as a voxel axis 0, 1, 2 (the axis slices were
/// acquired along); `None` when absent or not a BIDS value.
pub fn slice_encoding_axis(path: &Path) -> Option<usize> {
    sidecar_axis(path, "SliceEncodingDirection")
}

/// A BIDS direction field of the sidecar as a voxel axis; `None` on any failure.
fn sidecar_axis(path: &Path, key: &str) -> Option<usize> {
    let (_, json) = read_sidecar(path, "").ok()??;
    parse_phase_encoding(json.get(key)?.as_str()?)
}

/// The sidecar's `TotalReadoutTime` (seconds): `Ok(None)` when there is no sidecar or no such
/// key; an error when the sidecar is unreadable or the value is not a positive number of seconds
/// (BIDS: the time from the centre of the first to the centre of the last echo, under 1 s).
pub fn read_total_readout_time(dwi: &Path) -> Result<Option<f64>> {
    let Some((path, json)) = read_sidecar(dwi, "--readout-time")? else {
        return Ok(None);
    };
    match json.get("TotalReadoutTime") {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t < 1.0 => Ok(Some(t)),
            _ => Err(Error::input(format!(
                "{}: TotalReadoutTime is {v}, expected seconds between 0 and 1 (e.g. 0.05); \
                 fix it or give --readout-time",
                path.display()
            ))),
        },
    }
}

/// The series' JSON sidecar, parsed: `Ok(None)` when there is none; an error naming the file
/// (and `option`, the command-line alternative) when it cannot be read or is not JSON.
fn read_sidecar(dwi: &Path, option: &str) -> Result<Option<(PathBuf, Value)>> {
    let path = sidecar_json(dwi);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::input(format!(
                "cannot read the sidecar {}: {e}",
                path.display()
            )))
        }
    };
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        Error::input(format!(
            "the sidecar {} is not valid JSON ({e}); fix it or give {option}",
            path.display()
        ))
    })?;
    Ok(Some((path, json)))
}

/// `i`/`j`/`k` (with an optional trailing `-`) → 0/1/2.
pub fn parse_phase_encoding(s: &str) -> Option<usize> {
    PhaseEncoding::parse(s).map(|p| p.axis)
}

/// A phase-encoding direction: voxel axis (0 = i, 1 = j, 2 = k) and whether it is reversed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseEncoding {
    pub axis: usize,
    pub reversed: bool,
}

impl PhaseEncoding {
    /// Parse `i`, `i-`, `j`, `j-`, `k`, `k-` (BIDS and `--pe-dir`).
    pub fn parse(s: &str) -> Option<PhaseEncoding> {
        let (axis, rest) = match s.trim().chars().next()? {
            'i' => (0, &s.trim()[1..]),
            'j' => (1, &s.trim()[1..]),
            'k' => (2, &s.trim()[1..]),
            _ => return None,
        };
        match rest {
            "" => Some(PhaseEncoding {
                axis,
                reversed: false,
            }),
            "-" => Some(PhaseEncoding {
                axis,
                reversed: true,
            }),
            _ => None,
        }
    }

    /// The BIDS text (`j-`, …).
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            ['i', 'j', 'k'][self.axis],
            if self.reversed { "-" } else { "" }
        )
    }

    /// The direction in scanner RAS of `grid` (unit vector along the axis' affine column).
    pub fn world(&self, grid: &Grid) -> Vector3<f64> {
        let col = grid.affine.fixed_view::<3, 1>(0, self.axis).into_owned();
        let v = col / col.norm();
        if self.reversed {
            -v
        } else {
            v
        }
    }
}

/// `PhaseEncodingDirection` from the series' sidecar: `Ok(None)` when there is no sidecar or
/// it has no such key; an error when the sidecar cannot be read or the value is not BIDS.
pub fn read_phase_encoding(dwi: &Path) -> Result<Option<PhaseEncoding>> {
    let Some((path, json)) = read_sidecar(dwi, "--pe-dir")? else {
        return Ok(None);
    };
    match json.get("PhaseEncodingDirection") {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(PhaseEncoding::parse)
            .map(Some)
            .ok_or_else(|| {
                Error::input(format!(
                    "{}: PhaseEncodingDirection is {v}, expected one of i, i-, j, j-, k, k-; fix it or give --pe-dir",
                    path.display()
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    #[test]
    fn parses_bids_directions_and_maps_them_through_the_affine() {
        for (s, axis, rev) in [("i", 0, false), ("j-", 1, true), ("k", 2, false)] {
            let p = PhaseEncoding::parse(s).unwrap();
            assert_eq!((p.axis, p.reversed), (axis, rev));
            assert_eq!(p.label(), s);
        }
        for bad in ["", "x", "j+", "-j", "jj"] {
            assert_eq!(PhaseEncoding::parse(bad), None, "{bad}");
        }
        // LAS storage rotated 90° about z: voxel j runs along -x in RAS
        let a = Matrix4::new(
            0.0, -2.0, 0.0, 10.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 1.0,
        );
        let g = Grid::new([4, 4, 4], a);
        let e = PhaseEncoding::parse("j").unwrap().world(&g);
        assert!((e - Vector3::new(-1.0, 0.0, 0.0)).norm() < 1e-15);
        let e = PhaseEncoding::parse("i-").unwrap().world(&g);
        assert!((e - Vector3::new(0.0, 1.0, 0.0)).norm() < 1e-15);
    }
}

/// The entities of a BIDS file name (`sub-01_ses-2_acq-hi_dir-AP_run-1_dwi.nii.gz`), in their
/// order, and its suffix (`dwi`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entities {
    pub pairs: Vec<(String, String)>,
    pub suffix: String,
}

impl Entities {
    /// Parse a series' file name. BIDS names are `key-label` pairs joined by `_`, the first
    /// `sub`, then the suffix; labels are alphanumeric. The reason is given on failure.
    pub fn parse(path: &Path) -> std::result::Result<Self, String> {
        let stem = series_stem(path);
        let mut parts: Vec<&str> = stem.split('_').collect();
        let suffix = parts.pop().unwrap_or_default().to_string();
        if parts.is_empty() || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "'{stem}' is not a BIDS name (sub-<label>[_ses-<label>]…_dwi)"
            ));
        }
        let mut pairs = Vec::new();
        for p in parts {
            let (k, v) = p
                .split_once('-')
                .ok_or_else(|| format!("'{p}' in '{stem}' is not a key-label entity"))?;
            let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok(k) || !ok(v) {
                return Err(format!(
                    "entity '{p}' in '{stem}': keys and labels must be letters and digits"
                ));
            }
            if pairs.iter().any(|(q, _): &(String, String)| q == k) {
                return Err(format!("entity '{k}' appears twice in '{stem}'"));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        if pairs[0].0 != "sub" {
            return Err(format!("'{stem}' does not start with sub-<label>"));
        }
        Ok(Entities { pairs, suffix })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The derivative's name stem: the source's entities in order, without `desc`/`space`,
    /// then `extra` (e.g. `[("desc", "hmc")]`), then `_suffix`.
    pub fn derivative_stem(&self, extra: &[(&str, &str)], suffix: &str) -> String {
        let mut parts: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "desc" && k != "space")
            .map(|(k, v)| format!("{k}-{v}"))
            .collect();
        parts.extend(extra.iter().map(|(k, v)| format!("{k}-{v}")));
        parts.push(suffix.to_string());
        parts.join("_")
    }

    /// `sub-<label>/[ses-<label>/]<datatype>` under a dataset root.
    pub fn folder(&self, root: &Path, datatype: &str) -> PathBuf {
        let mut d = root.join(format!("sub-{}", self.get("sub").unwrap_or_default()));
        if let Some(ses) = self.get("ses") {
            d = d.join(format!("ses-{ses}"));
        }
        d.join(datatype)
    }
}

/// The files `estimate --bids-derivatives` writes for one series, relative to the folder of
/// [`Entities::folder`], paired with the name of the native output each one copies (`None`:
/// generated, a JSON sidecar).
pub fn derivative_files(e: &Entities) -> Vec<(String, Option<&'static str>)> {
    let hmc = [("desc", "hmc")];
    let xfm = [("from", "orig"), ("to", "hmc"), ("mode", "image")];
    vec![
        (
            format!("{}.nii.gz", e.derivative_stem(&hmc, "dwi")),
            Some("dwi_corrected.nii.gz"),
        ),
        (
            format!("{}.bval", e.derivative_stem(&hmc, "dwi")),
            Some("dwi_corrected.bval"),
        ),
        (
            format!("{}.bvec", e.derivative_stem(&hmc, "dwi")),
            Some("dwi_corrected.bvec"),
        ),
        (format!("{}.json", e.derivative_stem(&hmc, "dwi")), None),
        (
            format!("{}.tsv", e.derivative_stem(&hmc, "motion")),
            Some("motion.tsv"),
        ),
        (format!("{}.json", e.derivative_stem(&hmc, "motion")), None),
        (
            format!("{}.txt", e.derivative_stem(&xfm, "xfm")),
            Some("transforms.tfm"),
        ),
    ]
}
