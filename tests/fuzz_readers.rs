//! Issue 9, family 7: a seeded mutation fuzzer over every reader of untrusted bytes — the
//! NIfTI header and gzip reader, the gradient readers (FSL, MRtrix), the transform readers
//! (ITK text, ANTs .mat, X5) and the motion-table parser — run in the normal `cargo test`
//! (stable Rust, fixed seed, a few seconds). Asserted for every mutant: no panic, and an
//! error is one line (no newline in the message). A failure prints the seed and case number;
//! the mutant is deterministic, so it can be replayed.

use flate2::write::GzEncoder;
use flate2::Compression;
use nalgebra::Matrix4;
use nifreeze::image::Grid;
use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::{gradients, nifti, transforms};
use nifreeze::model::ModelKind;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const I16S: [i16; 7] = [0, -1, 1, 2, 7, i16::MAX, i16::MIN];
const F32S: [f32; 8] = [
    0.0,
    -1.0,
    1.0,
    f32::NAN,
    f32::INFINITY,
    -f32::INFINITY,
    1e30,
    1e-30,
];

/// One mutant of `base`. `fields` are offsets of interesting 2- and 4-byte fields (header
/// dims, datatype, pixdim, vox_offset, scaling, quaternion …) that get edge values.
fn mutate(rng: &mut Rng, base: &[u8], fields: &[(usize, bool)]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = [0u8, 0xff, 0x7f, 0x80, b' ', b'\n', b'-', b'e'][rng.below(8)];
            }
            2 if !fields.is_empty() => {
                let (off, is_f32) = fields[rng.below(fields.len())];
                if is_f32 && off + 4 <= b.len() {
                    b[off..off + 4].copy_from_slice(&F32S[rng.below(F32S.len())].to_le_bytes());
                } else if off + 2 <= b.len() {
                    b[off..off + 2].copy_from_slice(&I16S[rng.below(I16S.len())].to_le_bytes());
                }
            }
            3 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            4 => {
                for _ in 0..rng.below(64) {
                    b.push(rng.next() as u8);
                }
            }
            5 if b.len() > 8 => {
                let i = rng.below(b.len() - 4);
                let chunk: Vec<u8> = b[i..i + 4].to_vec();
                let j = rng.below(b.len());
                b.splice(j..j, chunk);
            }
            _ if !b.is_empty() => {
                // an invisible character (BOM, zero-width space) or a NUL in the text
                let i = rng.below(b.len());
                let ins: &[u8] = [&[0xEF, 0xBB, 0xBF][..], &[0xE2, 0x80, 0x8B], &[0]][rng.below(3)];
                b.splice(i..i, ins.iter().copied());
            }
            _ => {}
        }
    }
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Run `f` on a mutant: it must not panic, and an error must be one line.
fn check<T>(what: &str, case: usize, f: impl FnOnce() -> nifreeze::Result<T>) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what} case {case} (seed {SEED:#x}): panicked"),
        Ok(Err(e)) => {
            let m = e.to_string();
            assert!(
                !m.contains('\n') && !m.is_empty(),
                "{what} case {case}: error is not one line: {m:?}"
            );
        }
        Ok(Ok(_)) => {}
    }
}

fn nifti_bytes() -> Vec<u8> {
    // a valid 4x4x3x8 float32 series (the corpus' good case)
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad/bom_sidecars.nii");
    std::fs::read(path).unwrap()
}

#[test]
fn nifti_header_and_gzip_reader_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = nifti_bytes();
    let mut fields: Vec<(usize, bool)> = (40..56).step_by(2).map(|o| (o, false)).collect();
    fields.extend([(70, false), (72, false), (252, false), (254, false)]);
    fields.extend((76..108).step_by(4).map(|o| (o, true)));
    fields.extend([(108, true), (112, true), (116, true)]);
    fields.extend((256..328).step_by(4).map(|o| (o, true)));
    fields.push((0, true)); // sizeof_hdr
    let mut rng = Rng(SEED);
    let gz_base = gz(&base);
    for case in 0..900 {
        let bytes = match case % 3 {
            0 => mutate(&mut rng, &base, &fields),
            1 => gz(&mutate(&mut rng, &base, &fields)),
            _ => mutate(&mut rng, &gz_base, &[]),
        };
        let p = dir.path().join(format!("m{}.nii", case % 7));
        std::fs::write(&p, &bytes).unwrap();
        check("read_series", case, || nifti::read_series(&p));
        check("read_meta", case, || nifti::read_meta(&p));
        check("verify_data", case, || nifti::verify_data(&p));
    }
}

#[test]
fn gradient_readers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bval = b"0 1000 1000 1000 1000 1000 1000 2000\n".to_vec();
    let bvec = b"0 1 0 0 0.7071 0.7071 0 0.5774\n0 0 1 0 0.7071 0 0.7071 0.5774\n0 0 0 1 0 0.7071 0.7071 0.5774\n".to_vec();
    let btab = b"0 0 0 0\n1 0 0 1000\n0 1 0 1000\n0 0 1 1000\n0.7071 0.7071 0 1000\n0.7071 0 0.7071 1000\n0 0.7071 0.7071 1000\n0.5774 0.5774 0.5774 2000\n".to_vec();
    let mut affine = Matrix4::new_scaling(2.0);
    affine[(3, 3)] = 1.0;
    let grid = Grid::new([4, 4, 3], affine);
    let dwi = dir.path().join("dwi.nii");
    let mut rng = Rng(SEED ^ 1);
    for case in 0..600 {
        let (pv, pc, pb) = (
            dir.path().join("g.bval"),
            dir.path().join("g.bvec"),
            dir.path().join("g.b"),
        );
        std::fs::write(&pv, mutate(&mut rng, &bval, &[])).unwrap();
        std::fs::write(&pc, mutate(&mut rng, &bvec, &[])).unwrap();
        std::fs::write(&pb, mutate(&mut rng, &btab, &[])).unwrap();
        let fsl = GradientArgs {
            bval: Some(pv.clone()),
            bvec: Some(pc.clone()),
            b0_threshold: 50.0,
            ..Default::default()
        };
        let mrtrix = GradientArgs {
            grad: Some(pb.clone()),
            b0_threshold: 50.0,
            ..Default::default()
        };
        for args in [&fsl, &mrtrix] {
            check("gradients::load", case, || {
                let g = gradients::load(&dwi, args, &grid, 8)?;
                gradients::check_usable(&g.table, 50.0, false)?;
                nifreeze::model::requirements::check(ModelKind::Dti, &g.table, 50.0, true)?;
                nifreeze::model::requirements::check(ModelKind::Dki, &g.table, 50.0, true)
            });
        }
    }
}

#[test]
fn transform_readers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let m = Matrix4::new(
        0.99, -0.1, 0.05, 1.5, 0.1, 0.99, -0.02, -2.0, -0.05, 0.02, 0.99, 0.7, 0.0, 0.0, 0.0, 1.0,
    );
    let itk = transforms::itk_text(&[m, m]).into_bytes();
    let mat = transforms::ants_mat_bytes(&m);
    let grid = Grid::new([4, 4, 3], Matrix4::identity());
    let x5 = transforms::x5_bytes(&[m], Some(&grid)).unwrap();
    // header words of both .mat variables (type, rows, cols, imag, namlen)
    let second = 20 + "AffineTransform_double_3_3".len() + 1 + 12 * 8;
    let mat_fields: Vec<(usize, bool)> = (0..5)
        .flat_map(|k| [(4 * k, true), (second + 4 * k, true)])
        .collect();
    let tsv = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample/truth.tsv"),
    )
    .unwrap()
    .into_bytes();
    let mut rng = Rng(SEED ^ 2);
    for case in 0..700 {
        let t = mutate(&mut rng, &itk, &[]);
        check("parse_itk", case, || {
            transforms::parse_itk(&String::from_utf8_lossy(&t), "t.tfm")
        });
        let b = mutate(&mut rng, &mat, &mat_fields);
        check("parse_ants_mat", case, || {
            transforms::parse_ants_mat(&b, "t.mat")
        });
        let s = mutate(&mut rng, &tsv, &[]);
        check("parse_matrices", case, || {
            nifreeze::compare::parse_matrices(&String::from_utf8_lossy(&s), "motion.tsv")
        });
        if case < 300 {
            let x = mutate(&mut rng, &x5, &[]);
            let p = dir.path().join("t.x5");
            std::fs::write(&p, &x).unwrap();
            check("read_x5", case, || transforms::read_x5(Path::new(&p)));
        }
    }
}
