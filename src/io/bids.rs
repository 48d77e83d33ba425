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
    let text = std::fs::read_to_string(sidecar_json(path)).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    parse_phase_encoding(json.get("PhaseEncodingDirection")?.as_str()?)
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
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::input(format!(
            "the sidecar {} is not valid JSON ({e}); fix it or give --pe-dir",
            path.display()
        ))
    })?;
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
