//! NIfTI round trips, cross-checked against the independent `nifti` crate reader.

use ::nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use nalgebra::{Matrix4, Rotation3, Vector3};
use nifreeze::image::{Grid, Series};
use nifreeze::io::nifti::{self as nii, DataType};

fn oblique_grid(dims: [usize; 3], flip_x: bool) -> Grid {
    // 12° about an oblique axis, anisotropic voxels, optional det>0 (x flipped) storage.
    let r = Rotation3::from_axis_angle(
        &nalgebra::Unit::new_normalize(Vector3::new(0.3, -0.5, 0.8)),
        12f64.to_radians(),
    );
    let s =
        nalgebra::Matrix3::from_diagonal(&Vector3::new(if flip_x { 2.0 } else { -2.0 }, 2.2, 3.0));
    let mut a = Matrix4::identity();
    a.fixed_view_mut::<3, 3>(0, 0).copy_from(&(r.matrix() * s));
    a[(0, 3)] = 40.5;
    a[(1, 3)] = -61.25;
    a[(2, 3)] = -20.0;
    Grid::new(dims, a)
}

fn values(n: usize, dt: DataType) -> Vec<f32> {
    // Fits every datatype: small non-negative integers for unsigned, signed otherwise.
    (0..n)
        .map(|i| {
            let v = ((i * 37) % 101) as f32;
            match dt {
                DataType::F32 | DataType::F64 => v * 0.37 - 12.5,
                DataType::I8 | DataType::I16 | DataType::I32 | DataType::I64 => v - 50.0,
                _ => v,
            }
        })
        .collect()
}

#[test]
fn every_datatype_round_trips_in_nii_and_gz_and_matches_the_nifti_crate() {
    let dir = tempfile::tempdir().unwrap();
    let grid = oblique_grid([5, 4, 3], false);
    for dt in DataType::ALL {
        for ext in ["nii", "nii.gz"] {
            let n = grid.len() * 2;
            let s = Series::new(grid.clone(), 2, values(n, dt));
            let p = dir.path().join(format!("img_{}.{ext}", dt.name()));
            nii::write_series_as(&p, &s, None, dt).unwrap();
            let (back, meta) = nii::read_series(&p).unwrap();
            assert_eq!(meta.datatype, dt);
            assert_eq!(back.n_volumes, 2);
            assert_eq!(back.grid.dims, grid.dims);
            assert_eq!(back.to_f32(), s.to_f32(), "{dt:?} {ext}");
            assert!(
                back.grid.matches(&grid, 1e-5),
                "{dt:?}: affine {}",
                back.grid.affine
            );
            // Independent reader (Fortran order [x, y, z, t], same as ours).
            let obj = ReaderOptions::new().read_file(&p).unwrap();
            let arr = obj.into_volume().into_ndarray::<f64>().unwrap();
            assert_eq!(arr.shape(), &[5, 4, 3, 2]);
            let theirs: Vec<f32> = arr.t().iter().map(|&v| v as f32).collect();
            // ndarray .t() of a Fortran array iterates x fastest.
            assert_eq!(theirs, s.to_f32(), "{dt:?} {ext} vs nifti crate");
        }
    }
}

#[test]
fn qform_alone_gives_the_same_affine_as_the_sform_for_oblique_and_det_positive_grids() {
    let dir = tempfile::tempdir().unwrap();
    for flip in [false, true] {
        let grid = oblique_grid([6, 5, 4], flip);
        let p = dir.path().join("q.nii");
        let v = nifreeze::image::Volume::new(grid.clone(), vec![1.0; grid.len()]);
        nii::write_volume(&p, &v, None).unwrap();
        // Zero sform_code (bytes 254..256) so the reader must use the quaternion.
        let mut b = std::fs::read(&p).unwrap();
        b[254] = 0;
        b[255] = 0;
        std::fs::write(&p, &b).unwrap();
        let (back, meta) = nii::read_volume(&p).unwrap();
        assert_eq!(meta.affine_source(), "qform");
        assert!(
            back.grid.matches(&grid, 1e-4),
            "flip={flip}: {} vs {}",
            back.grid.affine,
            grid.affine
        );
        assert_eq!(meta.pixdim[0], if flip { 1.0 } else { -1.0 }, "qfac");
    }
}

#[test]
fn output_keeps_the_input_header_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let (s, meta) = nii::read_series(std::path::Path::new("data/sample/dwi.nii.gz")).unwrap();
    let v = s.to_volume(1);
    let p = dir.path().join("v.nii.gz");
    nii::write_volume(&p, &v, Some(&meta)).unwrap();
    let (back, m2) = nii::read_volume(&p).unwrap();
    assert_eq!(m2.sform_code, meta.sform_code);
    assert_eq!(m2.qform_code, meta.qform_code);
    assert_eq!(m2.srow, meta.srow);
    assert_eq!(m2.datatype, DataType::F32);
    assert_eq!(back.data, v.data);
    // Atomic write leaves no temporary file behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn sample_data_reads_like_the_nifti_crate_reads_it() {
    let p = std::path::Path::new("data/sample/dwi.nii.gz");
    let (s, meta) = nii::read_series(p).unwrap();
    assert_eq!(meta.datatype, DataType::I16);
    assert_eq!((s.grid.dims, s.n_volumes), ([45, 54, 45], 27));
    let obj = ReaderOptions::new().read_file(p).unwrap();
    let h = obj.header().clone();
    assert_eq!(h.sform_code, meta.sform_code);
    for c in 0..4 {
        assert_eq!(h.srow_x[c] as f64, s.grid.affine[(0, c)]);
        assert_eq!(h.srow_z[c] as f64, s.grid.affine[(2, c)]);
    }
    let arr = obj.into_volume().into_ndarray::<f32>().unwrap();
    let theirs: Vec<f32> = arr.t().iter().copied().collect();
    assert!(theirs == s.to_f32());
}

#[test]
fn orientation_codes() {
    let g = oblique_grid([2, 2, 2], false);
    assert_eq!(nii::orientation_code(&Matrix4::identity()), "RAS");
    assert_eq!(
        nii::orientation_code(&Matrix4::from_diagonal(&nalgebra::Vector4::new(
            -2.0, 2.0, 2.0, 1.0
        ))),
        "LAS"
    );
    assert_eq!(nii::orientation_code(&g.affine).len(), 3);
}
