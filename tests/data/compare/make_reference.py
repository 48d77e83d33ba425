"""Make the compare-vs-score.py reference data (run from the repository root):

    python3 tests/data/compare/make_reference.py ../shared/tools/score.py

For each case (mini = data/sample truth + mask; oblique = a 6 mm oblique, x-flipped
simulation made by `nifreeze-rs simulate --voxel-size 6 --shells 1000:6,2000:6 --b0 2
--oblique 20 --flip-x --seed 11`, truth.tsv + brainmask.nii.gz copied here) it writes an
estimate E_k = T_k · G · P_k (G one global rigid offset, P_k small random rigid errors, one
volume with a small affine error; columns in a shuffled order with extra columns) and runs
the independent Python scorer on it, storing its JSON output as the reference.
"""
import json, subprocess, sys, shutil, tempfile
from pathlib import Path
import numpy as np
from scipy.spatial.transform import Rotation

score = sys.argv[1]
here = Path(__file__).parent
cases = {"mini": (Path("data/sample/truth.tsv"), Path("data/sample/brainmask.nii.gz")),
         "oblique": (here / "oblique/truth.tsv", here / "oblique/brainmask.nii.gz")}

def rigid(rng, rot_deg, trans_mm, centre):
    R = Rotation.from_euler("xyz", rng.uniform(-rot_deg, rot_deg, 3), degrees=True).as_matrix()
    t = rng.uniform(-trans_mm, trans_mm, 3)
    M = np.eye(4); M[:3, :3] = R; M[:3, 3] = t + centre - R @ centre
    return M

for name, (truth, mask) in cases.items():
    rows = [l.rstrip("\n").split("\t") for l in open(truth)]
    hdr = rows[0]
    idx = [hdr.index(f"m{i}{j}") for i in range(4) for j in range(4)]
    T = np.array([[float(r[i]) for i in idx] for r in rows[1:]]).reshape(-1, 4, 4)
    rng = np.random.default_rng(20250601 + len(name))
    centre = np.array([0.0, -20.0, 10.0])
    G = rigid(rng, 2.0, 1.5, centre)
    E = []
    for k in range(len(T)):
        P = rigid(rng, 0.3, 0.3, centre)
        if k == len(T) // 2:
            P[:3, :3] = P[:3, :3] @ np.diag([1.01, 0.995, 1.0])  # one non-rigid (affine) error
        E.append(T[k] @ G @ P)
    E = np.array(E)
    cols = ["volume", "note"] + [f"m{i}{j}" for i in range(4) for j in range(4)][::-1]
    out = here / f"{name}_estimate.tsv"
    with open(out, "w") as f:
        f.write("\t".join(cols) + "\n")
        for k in range(len(E)):
            vals = [str(k), "x"] + [repr(float(E[k][int(c[1]), int(c[2])])) for c in cols[2:]]
            f.write("\t".join(vals) + "\n")
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(truth, Path(d) / "truth.tsv")
        shutil.copy(mask, Path(d) / "brainmask.nii.gz")
        res = subprocess.run([sys.executable, score, d, str(out), "--json"], check=True,
                             capture_output=True, text=True).stdout
    (here / f"{name}_score_py.json").write_text(res)
    print(name, json.loads(res)["aligned_mean_mm"])
