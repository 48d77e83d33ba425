"""Build the bad-input corpus used by tests/bad_inputs.rs (run once; outputs are committed).

Every case is a small, deliberately broken DWI input; `nifreeze-rs estimate` must exit 2 with a
one-line message for each. Pure Python (struct + gzip), so the bytes are exactly what is written here.
"""
import gzip, struct, math, os

def header(dims, datatype=16, bitpix=32, slope=1.0, inter=0.0, sizeof=348, magic=b"n+1\0"):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, sizeof)
    d = [len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into("<8h", h, 40, *d)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1.0, 2.0, 2.0, 2.0, 1.0, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<ff", h, 112, slope, inter)
    struct.pack_into("<hh", h, 252, 0, 2)
    struct.pack_into("<4f", h, 280, 2, 0, 0, -4)
    struct.pack_into("<4f", h, 296, 0, 2, 0, -4)
    struct.pack_into("<4f", h, 312, 0, 0, 2, -3)
    h[344:348] = magic
    return bytes(h)

DIMS = (4, 4, 3, 8)
BVALS = [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
BVECS = [[0, 1, 0, 0, 0.7071, 0.7071, 0, 0.5774],
         [0, 0, 1, 0, 0.7071, 0, 0.7071, 0.5774],
         [0, 0, 0, 1, 0, 0.7071, 0.7071, 0.5774]]

def data(dims):
    n = math.prod(dims)
    return struct.pack(f"<{n}f", *[100.0 + (i % 17) for i in range(n)])

def write_sidecars(stem, bvals=BVALS, bvecs=BVECS):
    open(stem + ".bval", "w").write(" ".join(str(b) for b in bvals) + "\n")
    open(stem + ".bvec", "w").write("\n".join(" ".join(str(v) for v in r) for r in bvecs) + "\n")

def case(name, payload, sidecars=True, **kw):
    with open(name + ".nii" if not name.endswith(".gz") else name, "wb") as f:
        f.write(payload)
    if sidecars:
        write_sidecars(name.replace(".nii.gz", ""), **kw)

good = header(DIMS) + data(DIMS)
# 1. truncated gzip: a valid series, gzip stream cut in half
z = gzip.compress(good)
case("truncated_gzip.nii.gz", z[: len(z) // 2])
# 2. NaN scl_slope on an otherwise fine series is NOT an error (treated as 1); the bad case is NaN data
#    scaling *and* NaN b-values elsewhere. Here: NaN slope AND an integer type with NaN intercept ->
#    still readable; used by the NIfTI tests as a positive case.
case("nan_slope", header(DIMS, datatype=4, bitpix=16, slope=float("nan"), inter=float("nan"))
     + struct.pack(f"<{math.prod(DIMS)}h", *[100 + (i % 17) for i in range(math.prod(DIMS))]),
     bvals=[0, 1000, 1000, 1000, 1000, 1000, 1000, 1000])
# 3. mismatched counts: 8 volumes, 7 b-values
case("mismatched_counts", good, bvals=BVALS[:7], bvecs=[r[:7] for r in BVECS])
# 4. a 3-D image given as a DWI series
d3 = DIMS[:3]
case("three_d", header(d3) + data(d3), bvals=[0], bvecs=[[0], [0], [0]])
# 5. NIfTI-2 header (540-byte sizeof_hdr)
case("nifti2", struct.pack("<i", 540) + b"n+2\0\r\n\x1a\n" + bytes(600))
# 6. empty file
case("empty", b"")
# 7. plain text named .nii
case("plain_text", b"this is not an image\n" * 30)
# 8. missing sidecar: a fine series with no bval/bvec/b beside it
case("missing_sidecar", good, sidecars=False)
# 9. NaN b-value
case("nan_bvalue", good, bvals=[0, 1000, float("nan"), 1000, 1000, 1000, 1000, 1000])
# 10. truncated raw data (header promises more voxels than the file holds)
case("truncated_data", good[: len(good) - 100])
# 11. zero gradient vector with b > 0
case("zero_bvec", good, bvecs=[[0, 0, 0, 0, 0.7071, 0.7071, 0, 0.5774]] + BVECS[1:])
# 12. fewer than 6 DW directions
case("too_few_directions", good, bvals=[0, 0, 0, 1000, 1000, 1000, 1000, 1000])
# 13. no b=0 volume
case("no_b0", good, bvals=[1000] * 8, bvecs=[[1, 0, 0, 0.7071, 0.7071, 0, 0.5774, 1]] + [[0, 1, 0, 0.7071, 0, 0.7071, 0.5774, 0], [0, 0, 1, 0, 0.7071, 0.7071, 0.5774, 0]])
# 14. bvec table of the wrong shape
case("bad_bvec_shape", good, bvecs=BVECS[:2])
# 15. unsupported datatype (complex64)
case("complex", header(DIMS, datatype=32, bitpix=64) + data(DIMS) + data(DIMS))
# 16. vectors far from unit length
case("long_bvec", good, bvecs=[[0, 2, 0, 0, 0.7071, 0.7071, 0, 0.5774]] + BVECS[1:])

# ---- issue 9 families (reliability); each is refused with exit 2 unless marked "accepted" ----
def data_with(dims, f):
    n = math.prod(dims)
    return struct.pack(f"<{n}f", *[f(i) for i in range(n)])
VOL = math.prod(DIMS[:3])
# 16. one volume entirely +Inf (made runs crawl): refused, the volume is named
case("inf_volume", header(DIMS) + data_with(DIMS, lambda i: float("inf") if i // VOL == 3 else 100.0 + (i % 17)))
# 17. an all-zero diffusion-weighted volume (degrades the fit of every other volume): refused
case("zero_dw_volume", header(DIMS) + data_with(DIMS, lambda i: 0.0 if i // VOL == 2 else 100.0 + (i % 17)))
# 18. an all-zero b=0 volume: refused
case("zero_b0_volume", header(DIMS) + data_with(DIMS, lambda i: 0.0 if i // VOL == 0 else 100.0 + (i % 17)))
# 19. negative scl_slope (all signal negative; median FD 357 mm was reported): refused
case("negative_slope", header(DIMS, datatype=4, bitpix=16, slope=-1.0)
     + struct.pack(f"<{math.prod(DIMS)}h", *[100 + (i % 17) for i in range(math.prod(DIMS))]))
# 20. every diffusion direction identical: refused for a tensor model
case("same_directions", good, bvecs=[[0, 1, 1, 1, 1, 1, 1, 1], [0] * 8, [0] * 8])
# 21. a non-finite b-vector on a diffusion-weighted volume: refused
case("nan_bvec_dw", good, bvecs=[[0, 1, 0, 0, 0.7071, float("nan"), 0, 0.5774]] + BVECS[1:])
# 22. a zero-width space inside a b-value: refused, and the character is named
case("invisible_char", good)
open("invisible_char.bval", "w", encoding="utf-8").write("0 1000 \u200b1000 1000 1000 1000 1000 1000\n")
# 23. qform-only header with a non-unit quaternion (nibabel refuses it): refused
def qform_header(dims, quat, pixdim=(2.0, 2.0, 2.0), qfac=1.0):
    h = bytearray(header(dims))
    struct.pack_into("<hh", h, 252, 1, 0)
    struct.pack_into("<4f", h, 76, qfac, *pixdim)
    struct.pack_into("<3f", h, 256, *quat)
    struct.pack_into("<3f", h, 268, 10.0, -20.0, 30.0)
    return bytes(h)
case("nonunit_quaternion", qform_header(DIMS, (0.9, 0.9, 0.0)) + data(DIMS))
# 24. qform-only header with a NaN voxel size: refused (nibabel returns a NaN affine)
case("nan_pixdim", qform_header(DIMS, (0.0, 0.0, 0.0), pixdim=(float("nan"), 2.0, 2.0)) + data(DIMS))
# 25. (accepted) UTF-8 byte-order mark at the start of .bval and .bvec (Windows editors)
case("bom_sidecars", good)
open("bom_sidecars.bval", "w", encoding="utf-8-sig").write(" ".join(str(b) for b in BVALS) + "\n")
open("bom_sidecars.bvec", "w", encoding="utf-8-sig").write("\n".join(" ".join(str(v) for v in r) for r in BVECS) + "\n")
# 26. (accepted, with a warning) `nan nan nan` b-vector on the b=0 volume (DIPY's small_64D.bvec)
case("nan_bvec_b0", good, bvecs=[[float("nan"), 1, 0, 0, 0.7071, 0.7071, 0, 0.5774],
                                 [float("nan"), 0, 1, 0, 0.7071, 0, 0.7071, 0.5774],
                                 [float("nan"), 0, 0, 1, 0, 0.7071, 0.7071, 0.5774]])
# 27. (accepted) gzip stream followed by zero padding (gzip -t and nibabel accept it)
case("gzip_zero_padding.nii.gz", gzip.compress(good, mtime=0) + bytes(512))
# 28. (accepted, bounded) gzip "bomb": the header describes 4x4x3x8 floats, the stream inflates
#     to 16 MiB more; only the bytes the header asks for are decompressed
bomb = gzip.compress(good + bytes(16 << 20), compresslevel=9, mtime=0)
case("gzip_bomb.nii.gz", bomb)
# 29. crafted ANTs .mat: rows x cols overflows 32 bits (panicked)
open("overflow.mat", "wb").write(struct.pack("<5i", 0, 0x40000000, 0x40000000, 0, 16) + b"AffineTransform\0" + bytes(64))
# 30. crafted ANTs .mat: negative row count
open("negative_rows.mat", "wb").write(struct.pack("<5i", 0, -1, 2, 0, 16) + b"AffineTransform\0")
