"""Reference data for tests/transforms_itk.rs and tests/registration_resample.rs.

Run with python3 (numpy, scipy, nitransforms 25.1): `python3 make_refs.py`. Everything is
computed by independent software (scipy.ndimage, nitransforms), never by nifreeze-rs.
"""
import json
import numpy as np
import nitransforms as nt
from scipy import ndimage
from scipy.spatial.transform import Rotation

rng = np.random.default_rng(44)

# --- transforms: a RAS reference->moving affine written by nitransforms (ITK text and .mat)
R = Rotation.from_euler("xyz", [2.5, -1.5, 3.0], degrees=True).as_matrix()
M = np.eye(4)
M[:3, :3] = R @ np.array([[1.02, 0.01, 0.0], [0.0, 0.99, -0.02], [0.01, 0.0, 1.01]])
M[:3, 3] = [1.25, -2.5, 3.75]
nt.linear.Affine(M).to_filename("nitransforms_affine.tfm", fmt="itk")
try:
    nt.linear.Affine(M).to_filename("nitransforms_affine.mat", fmt="itk")
except Exception as e:  # older nitransforms cannot write binary .mat
    print("no .mat:", e)

# an X5 file holding two transforms (identity, then M), written by nitransforms
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    nt.linear.LinearTransformsMapping(np.stack([np.eye(4), M])).to_filename("nitransforms_series.x5", fmt="x5")

# an ITK file with a non-zero centre and the MatrixOffsetTransformBase type, and what
# nitransforms reads from it
c = np.array([10.0, -20.0, 30.0])
lps = np.diag([-1, -1, 1, 1]) @ M @ np.diag([-1, -1, 1, 1])
A, off = lps[:3, :3], lps[:3, 3]
t = off - c + A @ c
with open("centred_matrixoffset.tfm", "w") as f:
    f.write("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n")
    f.write("Parameters: " + " ".join(repr(float(v)) for v in list(A.ravel()) + list(t)) + "\n")
    f.write("FixedParameters: " + " ".join(repr(float(v)) for v in c) + "\n")
read_back = np.asarray(nt.linear.load("centred_matrixoffset.tfm", fmt="itk").matrix).reshape(4, 4)

# --- resampling: scipy map_coordinates, cubic B-spline (mirror) and linear (nearest-edge)
dims = (12, 10, 8)
vol = rng.normal(100, 20, size=dims).astype(np.float32)
grid_aff = np.array([[2.0, 0.1, 0.0, -11.0], [0.0, 2.2, 0.1, -9.0], [0.05, 0.0, 2.5, -8.0], [0, 0, 0, 1]])
T = np.eye(4)
T[:3, :3] = Rotation.from_euler("xyz", [3, -2, 4], degrees=True).as_matrix()
T[:3, 3] = [0.7, -0.4, 0.3]
V = np.linalg.inv(grid_aff) @ T @ grid_aff
ijk = np.stack(np.meshgrid(*[np.arange(n) for n in dims], indexing="ij"), -1).reshape(-1, 3)
q = ijk @ V[:3, :3].T + V[:3, 3]
inside = np.all((q >= -0.5) & (q <= np.array(dims) - 0.5), axis=1)
cubic = ndimage.map_coordinates(vol.astype(np.float64), q.T, order=3, mode="mirror")
qc = np.clip(q, 0, np.array(dims) - 1)
linear = ndimage.map_coordinates(vol.astype(np.float64), qc.T, order=1, mode="nearest")
# x-fastest (NIfTI) order for the Rust side
order = np.lexsort((ijk[:, 0], ijk[:, 1], ijk[:, 2]))
json.dump(
    {
        "matrix_ras": M.tolist(),
        "centred_read_by_nitransforms": read_back.tolist(),
        "dims": list(dims),
        "grid_affine": grid_aff.tolist(),
        "transform": T.tolist(),
        "volume_xfastest": vol.transpose(2, 1, 0).ravel().astype(float).tolist(),
        "inside_xfastest": inside[order].tolist(),
        "cubic_xfastest": cubic[order].tolist(),
        "linear_xfastest": linear[order].tolist(),
    },
    open("refs.json", "w"),
)
