//! Report numerics against independent references: the phantoms' truth tables (Euler
//! convention, centre), numpy (RMS, FD, polar rotation), the conventions.md example, the
//! sample's own FSL and MRtrix tables, FNV-1a test vectors.

use approx::assert_abs_diff_eq;
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use nifreeze::image::Grid;
use nifreeze::io::gradients::GradientTable;
use nifreeze::report::{self, summary, MotionRow};
use std::path::Path;

fn data(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// Rows of a truth table: (bvalue, [tx ty tz rx ry rz]).
fn truth_params(text: &str) -> Vec<(f64, [f64; 6])> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<f64> = l.split('\t').map(|s| s.parse().unwrap()).collect();
            (f[1], [f[2], f[3], f[4], f[5], f[6], f[7]])
        })
        .collect()
}

/// The phantom truth gives parameters about the brain centroid (phantom.json
/// center_of_rotation_ras) and the matrices; R = Rz·Ry·Rx reproduces them to the printed
/// precision (6 decimals) on every volume of both phantoms.
#[test]
fn rigid_parameters_reproduce_phantom_truth() {
    for (file, c) in [
        (
            "tests/data/report/truth_mini.tsv",
            [0.0, -21.59832689023237, 9.78246078688288],
        ),
        (
            "tests/data/report/truth_bench.tsv",
            [0.0, -21.733443974989413, 9.831935751375184],
        ),
    ] {
        let text = data(file);
        let mats = report::read_motion_tsv(&text).unwrap();
        let truth = truth_params(&text);
        assert_eq!(mats.len(), truth.len());
        assert!(mats.len() >= 27);
        let centre = Vector3::from(c);
        for (m, (_, p)) in mats.iter().zip(&truth) {
            let q = report::rigid_parameters(m, &centre);
            for i in 0..6 {
                assert_abs_diff_eq!(q[i], p[i], epsilon = 1.5e-6);
            }
        }
        // Not vacuous: the motion is up to ~3°.
        assert!(truth
            .iter()
            .any(|(_, p)| p[3..].iter().any(|r| r.abs() > 2.0)));
    }
}

#[test]
fn euler_convention_is_rz_ry_rx() {
    let (rx, ry, rz) = (10f64.to_radians(), -20f64.to_radians(), 30f64.to_radians());
    let r = Rotation3::from_axis_angle(&Vector3::z_axis(), rz)
        * Rotation3::from_axis_angle(&Vector3::y_axis(), ry)
        * Rotation3::from_axis_angle(&Vector3::x_axis(), rx);
    let mut t = Matrix4::identity();
    t.fixed_view_mut::<3, 3>(0, 0).copy_from(r.matrix());
    let p = report::rigid_parameters(&t, &Vector3::zeros());
    assert_abs_diff_eq!(p[3], 10.0, epsilon = 1e-10);
    assert_abs_diff_eq!(p[4], -20.0, epsilon = 1e-10);
    assert_abs_diff_eq!(p[5], 30.0, epsilon = 1e-10);
}

/// A rotation θ about the volume centre c plus a translation d: T = [R, c − R·c + d].
fn about_centre(axis: Vector3<f64>, deg: f64, d: Vector3<f64>, c: &Vector3<f64>) -> Matrix4<f64> {
    let r = Rotation3::from_axis_angle(&nalgebra::Unit::new_normalize(axis), deg.to_radians());
    let mut t = Matrix4::identity();
    t.fixed_view_mut::<3, 3>(0, 0).copy_from(r.matrix());
    let tr = c - r * c + d;
    t.fixed_view_mut::<3, 1>(0, 3).copy_from(&tr);
    t
}

/// conventions.md: 0.5 mm + 1° about the centre gives FD 1.373 mm, RMS 1.015 mm.
#[test]
fn conventions_example_fd_and_rms() {
    let g = Grid::new([96, 96, 60], {
        let mut a = Matrix4::from_diagonal(&nalgebra::Vector4::new(2.0, 2.0, 2.5, 1.0));
        a[(0, 3)] = -95.0;
        a[(1, 3)] = -110.0;
        a[(2, 3)] = -60.0;
        a
    });
    let c = g.center_world();
    let t = about_centre(Vector3::x(), 1.0, Vector3::new(0.0, 0.5, 0.0), &c);
    let rows = report::motion_rows(&[Matrix4::identity(), t], &[0.0, 1000.0], &c);
    assert_abs_diff_eq!(rows[1].params[1], 0.5, epsilon = 1e-12);
    assert_abs_diff_eq!(rows[1].params[3], 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(rows[1].fd, 1.373, epsilon = 5e-4);
    assert_abs_diff_eq!(rows[1].rms_abs, 1.015, epsilon = 5e-4);
    assert_abs_diff_eq!(rows[1].rms_rel, rows[1].rms_abs, epsilon = 1e-12);
    assert_eq!(
        (rows[0].fd, rows[0].rms_abs, rows[0].rms_rel),
        (0.0, 0.0, 0.0)
    );
}

fn mat(v: [f64; 12]) -> Matrix4<f64> {
    let mut m = Matrix4::identity();
    for i in 0..12 {
        m[(i / 4, i % 4)] = v[i];
    }
    m
}

/// The two sheared affines of the numpy and DIPY references below (rng seed 42).
fn sheared_pair() -> (Matrix4<f64>, Matrix4<f64>) {
    let t1 = mat([
        1.0060822365097615,
        -0.06709198323967273,
        0.013033269781274781,
        1.4386512008066452,
        0.06094342278126134,
        1.0088067318800884,
        -0.053173882231801375,
        3.227616132708299,
        0.00701785898865382,
        0.03337568965820268,
        1.0158831145120737,
        -0.5658580117266885,
    ]);
    let t2 = mat([
        1.0109558156094771,
        0.06680634993060329,
        0.02116192470105635,
        -4.561962342127712,
        -0.06704684600261895,
        1.015440515552682,
        0.05254761392815417,
        -3.4571050793245215,
        0.0036272146736946956,
        -0.05103658683041557,
        0.997238296042774,
        1.8304895324245463,
    ]);
    (t1, t2)
}

/// Independent numpy/scipy reference for two random near-rigid affines (with shear), about
/// c = (1.5, −20.25, 12):
///   rng = np.random.default_rng(42); T = [R(euler xyz U(−4,4)°)·(I + U(−0.02,0.02)), U(−5,5)]
///   M = T1 @ inv(T2) − I; A = M[:3,:3]; t = M[:3,3] + A @ c
///   np.sqrt(t @ t + 80**2/5 * np.trace(A.T @ A))            -> 13.800919286174464
///   T[:3,:3] @ c + T[:3,3] − c                              -> translations below
///   U,S,Vt = svd(T[:3,:3]); Rotation.from_matrix(U@Vt).as_euler("xyz", degrees=True)
///   sum|Δt| + 50*sum|radians(Δθ)|                           -> 29.76826465470903
#[test]
fn rms_fd_and_params_match_numpy() {
    let (t1, t2) = sheared_pair();
    let c = Vector3::new(1.5, -20.25, 12.0);
    let rms = report::rms_deviation(&t1, &t2, &c, 80.0).unwrap();
    assert_abs_diff_eq!(rms, 13.800919286174464, epsilon = 1e-10);
    let p1 = report::rigid_parameters(&t1, &c);
    let p2 = report::rigid_parameters(&t2, &c);
    let e1 = [
        2.962786453549958,
        2.5026083595267856,
        -1.0405915646774275,
        2.4652980040920327,
        0.07013285123249352,
        3.6472669820395898,
    ];
    let e2 = [
        -5.644414108395537,
        -3.2397744211324095,
        2.8362807902642935,
        -2.979475773112377,
        0.399151504657634,
        -3.804879411165016,
    ];
    for i in 0..6 {
        assert_abs_diff_eq!(p1[i], e1[i], epsilon = 1e-9);
        assert_abs_diff_eq!(p2[i], e2[i], epsilon = 1e-9);
    }
    let fd = report::framewise_displacement(&[p1, p2]);
    assert_abs_diff_eq!(fd[1], 29.76826465470903, epsilon = 1e-8);
}

#[test]
fn polar_rotation_removes_scale_and_shear() {
    let r = Rotation3::from_euler_angles(0.1, -0.2, 0.3);
    let s = Matrix3::new(1.1, 0.02, 0.0, 0.02, 0.9, 0.01, 0.0, 0.01, 1.05); // SPD
    let q = report::polar_rotation(&(r.matrix() * s));
    assert_abs_diff_eq!((q - r.matrix()).abs().max(), 0.0, epsilon = 1e-12);
    // A reflection keeps its sign (LAS image axes).
    let l = Matrix3::from_diagonal(&Vector3::new(-2.0, 2.0, 2.0));
    assert_abs_diff_eq!(
        report::polar_rotation(&l).determinant(),
        -1.0,
        epsilon = 1e-12
    );
}

#[test]
fn motion_tsv_round_trips_and_has_the_documented_header() {
    let truth = report::read_motion_tsv(&data("tests/data/report/truth_mini.tsv")).unwrap();
    let g = Grid::new([45, 54, 45], {
        let mut a = Matrix4::from_diagonal(&nalgebra::Vector4::new(4.0, 4.0, 4.0, 1.0));
        a[(0, 3)] = -90.0;
        a[(1, 3)] = -126.0;
        a[(2, 3)] = -72.0;
        a
    });
    let bvals: Vec<f64> = truth_params(&data("tests/data/report/truth_mini.tsv"))
        .iter()
        .map(|r| r.0)
        .collect();
    let rows = report::motion_rows(&truth, &bvals, &g.center_world());
    let text = report::motion_tsv(&rows, &truth);
    let header = text.lines().next().unwrap();
    assert!(header.starts_with(
        "index\tbvalue\ttx\tty\ttz\trx\try\trz\tfd\trms_abs\trms_rel\tm00\tm01\tm02\tm03\tm10"
    ));
    assert!(header.ends_with("m30\tm31\tm32\tm33"));
    assert_eq!(text.lines().count(), 28);
    assert!(text.lines().all(|l| l.split('\t').count() == 27));
    let back = report::read_motion_tsv(&text).unwrap();
    assert_eq!(back, truth, "matrices must round-trip bit for bit");
    assert_eq!(report::motion_tsv(&rows, &truth), text, "deterministic");
    let second = text.lines().nth(2).unwrap();
    assert!(second.starts_with("1\t1004\t"), "{second}");
    // Bad input is an error, not a panic.
    assert!(report::read_motion_tsv("").is_err());
    assert!(report::read_motion_tsv("index\tm00\n0\t1\n").is_err());
    let broken = text
        .replacen("\t1004\t", "\t1004\tX", 1)
        .replace("1\t1004\tX", "1\t1004\t");
    assert!(
        report::read_motion_tsv(&broken.replace("\t0\t0\t0\t1\n", "\t0\t0\tnan?\t1\n")).is_err()
    );
}

#[test]
fn rotate_bvecs_applies_the_transpose_rotation() {
    // T rotates the head +90° about z: a gradient along scanner x is along −y in the reference.
    let rz = Rotation3::from_axis_angle(&Vector3::z_axis(), std::f64::consts::FRAC_PI_2);
    let mut t = Matrix4::identity();
    t.fixed_view_mut::<3, 3>(0, 0)
        .copy_from(&(rz.matrix() * Matrix3::from_diagonal(&Vector3::new(1.1, 0.9, 1.0))));
    t[(0, 3)] = 5.0;
    let table = GradientTable {
        bvecs: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        bvals: vec![0.0, 1000.0, 2000.0],
    };
    let out = report::rotate_bvecs(&table, &[t, t, Matrix4::identity()]);
    assert_eq!(out.bvals, table.bvals);
    assert_eq!(out.bvecs[0], [0.0, 0.0, 0.0]);
    assert_abs_diff_eq!(out.bvecs[1][0], 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(out.bvecs[1][1], -1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(out.bvecs[1][2], 0.0, epsilon = 1e-12);
    assert_eq!(out.bvecs[2], [0.0, 0.0, 1.0]);
}

fn parse_rows(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|s| s.parse().unwrap()).collect())
        .collect()
}

/// The sample's MRtrix table (scanner RAS) written as FSL for its grid (4 mm, RAS, det > 0,
/// so x is flipped) must give the sample's own dwi.bvec / dwi.bval (printed to 8 decimals).
#[test]
fn fsl_text_reproduces_the_sample_bvec() {
    let b = parse_rows(&data("data/sample/dwi.b"));
    let table = GradientTable {
        bvecs: b.iter().map(|r| [r[0], r[1], r[2]]).collect(),
        bvals: b.iter().map(|r| r[3]).collect(),
    };
    let g = Grid::new(
        [45, 54, 45],
        Matrix4::from_diagonal(&nalgebra::Vector4::new(4.0, 4.0, 4.0, 1.0)),
    );
    let (bval, bvec) = report::fsl_text(&table, &g);
    let want_vec = parse_rows(&data("data/sample/dwi.bvec"));
    let got_vec = parse_rows(&bvec);
    assert_eq!(got_vec.len(), 3);
    for a in 0..3 {
        assert_eq!(got_vec[a].len(), 27);
        for k in 0..27 {
            assert_abs_diff_eq!(got_vec[a][k], want_vec[a][k], epsilon = 1e-7);
        }
    }
    assert_eq!(parse_rows(&bval), parse_rows(&data("data/sample/dwi.bval")));
    // MRtrix text round-trips the table exactly.
    let back = parse_rows(&report::mrtrix_text(&table));
    assert_eq!(back, b);
}

/// Hand-checked: the same scanner gradients on a RAS grid (det > 0, x flipped) and an LAS
/// grid (det < 0, no flip, but the x axis points left) give the same FSL vectors; an
/// oblique grid gives b = F·Dᵀ·g with D its rotation (numpy:
/// `D = Rz(20°); F = diag(-1,1,1); F @ D.T @ [0.6, 0.8, 0]` → [−0.83743, 0.54654, 0]).
#[test]
fn fsl_text_flip_rules() {
    let table = GradientTable {
        bvecs: vec![[0.6, 0.8, 0.0]],
        bvals: vec![1000.0],
    };
    let ras = Grid::new(
        [10, 10, 10],
        Matrix4::from_diagonal(&nalgebra::Vector4::new(2.0, 2.0, 2.0, 1.0)),
    );
    let las = Grid::new(
        [10, 10, 10],
        Matrix4::from_diagonal(&nalgebra::Vector4::new(-2.0, 2.0, 2.0, 1.0)),
    );
    let v_ras = parse_rows(&report::fsl_text(&table, &ras).1);
    let v_las = parse_rows(&report::fsl_text(&table, &las).1);
    assert_eq!(v_ras, vec![vec![-0.6], vec![0.8], vec![0.0]]);
    assert_eq!(v_las, v_ras);
    let d = Rotation3::from_axis_angle(&Vector3::z_axis(), 20f64.to_radians());
    let mut a = Matrix4::identity();
    a.fixed_view_mut::<3, 3>(0, 0)
        .copy_from(&(d.matrix() * 2.0));
    let v = parse_rows(&report::fsl_text(&table, &Grid::new([10, 10, 10], a)).1);
    let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
    assert_abs_diff_eq!(v[0][0], -(c * 0.6 + s * 0.8), epsilon = 1e-12);
    assert_abs_diff_eq!(v[1][0], -s * 0.6 + c * 0.8, epsilon = 1e-12);
    assert_abs_diff_eq!(v[0][0], -0.83743, epsilon = 1e-5);
    assert_abs_diff_eq!(v[1][0], 0.54654, epsilon = 1e-5);
}

#[test]
fn fnv1a64_test_vectors() {
    // Reference values from the FNV specification (draft-eastlake-fnv, fnv1a64).
    assert_eq!(summary::fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(summary::fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(summary::fnv1a64(b"foobar"), 0x85944171f73967e8);
    let mut h = summary::Fnv1a64::new();
    h.update(b"foo");
    h.update(b"bar");
    assert_eq!(h.hex(), "85944171f73967e8");
}

#[test]
fn vmhwm_parsing_and_probe() {
    let status = "Name:\tx\nVmPeak:\t  20000 kB\nVmHWM:\t    10240 kB\nVmRSS:\t 5000 kB\n";
    assert_eq!(summary::parse_vmhwm_mb(status), Some(10.0));
    assert_eq!(summary::parse_vmhwm_mb("Name: x\n"), None);
    if cfg!(target_os = "linux") {
        let mb = report::peak_memory_mb().unwrap();
        assert!(mb > 0.5 && mb < 1e6, "{mb}");
    }
}

fn rows_for_svg(n: usize) -> Vec<MotionRow> {
    let c = Vector3::new(0.0, -20.0, 10.0);
    let mats: Vec<Matrix4<f64>> = (0..n)
        .map(|k| {
            about_centre(
                Vector3::new(1.0, 0.3, 0.1),
                0.1 * k as f64,
                Vector3::new(0.05 * k as f64, -0.02 * k as f64, 0.0),
                &c,
            )
        })
        .collect();
    let bvals: Vec<f64> = (0..n)
        .map(|k| {
            if k % 9 == 0 {
                0.0
            } else if k % 2 == 0 {
                1000.0
            } else {
                2005.0
            }
        })
        .collect();
    report::motion_rows(&mats, &bvals, &c)
}

#[test]
fn summary_json_round_trips() {
    let rows = rows_for_svg(12);
    let mut s = summary::Summary {
        tool: "nifreeze-rs".into(),
        version: "0.1.0".into(),
        ..Default::default()
    };
    s.command_line = vec!["nifreeze-rs".into(), "estimate".into(), "dwi.nii.gz".into()];
    s.parameters
        .insert("model".into(), serde_json::json!("dti"));
    s.inputs.push(summary::InputFile {
        role: "dwi".into(),
        path: "dwi.nii.gz".into(),
        bytes: 6,
        fnv1a64: format!("{:016x}", summary::fnv1a64(b"foobar")),
    });
    s.motion = summary::MotionStats::from_rows(&rows);
    s.volumes = rows.clone();
    let json = s.to_json();
    // serde_json writes the shortest round-trip text but (without its float_roundtrip
    // feature) may parse the last bit differently: compare floats to 1 ulp-ish.
    let back: summary::Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back.command_line, s.command_line);
    assert_eq!(back.inputs, s.inputs);
    assert_eq!(back.parameters, s.parameters);
    assert_eq!(back.volumes.len(), 12);
    for (a, b) in back.volumes.iter().zip(&s.volumes) {
        assert_eq!(a.index, b.index);
        assert_eq!(a.bvalue, b.bvalue);
        for (x, y) in [(a.fd, b.fd), (a.rms_abs, b.rms_abs), (a.rms_rel, b.rms_rel)]
            .into_iter()
            .chain(a.params.into_iter().zip(b.params))
        {
            assert_abs_diff_eq!(x, y, epsilon = 1e-15);
        }
    }
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["volumes"][3]["index"], 3);
    assert_eq!(v["inputs"][0]["fnv1a64"], "85944171f73967e8");
    let max_fd = rows.iter().map(|r| r.fd).fold(0.0, f64::max);
    assert_eq!(s.motion.max_fd, max_fd);
    assert!(max_fd > 0.1);
}

#[test]
fn svg_report_is_self_contained_and_escaped() {
    let rows = rows_for_svg(30);
    let svg = report::svg_report("sub-01 <dwi> & co", &rows);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.ends_with("</svg>\n"));
    assert!(svg.contains("sub-01 &lt;dwi&gt; &amp; co"));
    assert_eq!(
        svg.matches("<polyline").count(),
        9,
        "3 series in each of 3 panels"
    );
    assert_eq!(
        svg.matches("<circle").count(),
        30,
        "one FD marker per volume"
    );
    for label in [
        "Translation (mm)",
        "Rotation (deg)",
        "Displacement (mm)",
        "b=0",
        "b≈1000",
        "b≈2010",
        "FD (Power)",
        "RMS rel (prev.)",
        "RMS abs (ref.)",
    ] {
        assert!(svg.contains(label), "missing {label}");
    }
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    assert!(!svg.contains("href"), "no external references");
    assert_eq!(
        report::svg_report("sub-01 <dwi> & co", &rows),
        svg,
        "deterministic"
    );
    // Degenerate inputs do not panic.
    let _ = report::svg_report("empty", &[]);
    let _ = report::svg_report("one", &rows[..1]);
}

/// DIPY 1.12.1 reference: `reorient_bvecs(gradient_table([0, 1000, 2000], bvecs=[[0,0,0],
/// [0.6,0.8,0],[0,-0.6,0.8]]), np.stack([T1, T2], axis=-1)).bvecs` with the two sheared
/// affines of `rms_fd_and_params_match_numpy` (DIPY applies inv(polar(A)) = Rᵀ, like us).
#[test]
fn rotate_bvecs_matches_dipy_reorient_bvecs() {
    let (t1, t2) = sheared_pair();
    let table = GradientTable {
        bvecs: vec![[0.0; 3], [0.6, 0.8, 0.0], [0.0, -0.6, 0.8]],
        bvals: vec![0.0, 1000.0, 2000.0],
    };
    let out = report::rotate_bvecs(&table, &[Matrix4::identity(), t1, t2]);
    let want = [
        [0.0, 0.0, 0.0],
        [0.6496753343453089, 0.7595419684911515, -0.03190545476713207],
        [0.034241197375492166, -0.6394642020988988, 0.7680579891104],
    ];
    for (got, want) in out.bvecs.iter().zip(&want) {
        for (g, w) in got.iter().zip(want) {
            assert_abs_diff_eq!(*g, *w, epsilon = 1e-14);
        }
    }
}
