"""Regenerate model_extra.json: DIPY 1.12.1 leave-one-out predictions for 200 hand-picked
voxels of the mini phantom, chosen where DIPY's eigenvalue clipping changes the prediction,
where DKI predictions explode, plus random voxels and one all-zero voxel (S0 = 0 -> not fitted).

Run from the repository root: python3 tests/data/model_extra/make.py (needs ../shared, dipy 1.12.1).
Gradients are given to DIPY as nifreeze does: scanner RAS unit vectors (FSL x flipped for this
det > 0 affine, then normalised)."""
import json, warnings
import numpy as np, nibabel as nb
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel, decompose_tensor, from_lower_triangular
from dipy.reconst.dki import DiffusionKurtosisModel
warnings.filterwarnings("ignore")
D = "../shared/phantoms/mini/"
img = nb.load(D + "dwi.nii.gz")
assert np.linalg.det(img.affine[:3, :3]) > 0 and np.allclose(img.affine[:3, :3], np.diag(np.diag(img.affine[:3, :3])))
d = np.asarray(img.dataobj).astype(np.float64)
mask = nb.load(D + "brainmask.nii.gz").get_fdata() > 0
bvals = np.loadtxt(D + "dwi.bval")
bvecs = np.loadtxt(D + "dwi.bvec").T
bvecs[:, 0] *= -1
n = np.linalg.norm(bvecs, axis=1)
bvecs[n > 0] /= n[n > 0, None]
b0 = bvals <= 50
dw = np.where(~b0)[0]
vox = d[mask]
s0 = np.median(vox[:, b0], -1)
held = [int(dw[3]), int(dw[16])]

def fit(kind, meth, data, s0v, k):
    h = list(dw).index(k)
    tr = np.delete(dw, h)
    X, bv, bc = data[:, tr], bvals[tr], bvecs[tr]
    if kind == "dki":
        X = np.c_[X, s0v]; bv = np.r_[bv, 0]; bc = np.r_[bc, [[0, 0, 0]]]
        M = DiffusionKurtosisModel(gradient_table(bv, bvecs=bc), fit_method=meth.upper())
    else:
        M = TensorModel(gradient_table(bv, bvecs=bc), fit_method=meth.upper())
    f = M.fit(X)
    p = f.predict(gradient_table(bvals[[k]], bvecs=bvecs[[k]]), S0=s0v)[:, 0]
    return f, M, p

# voxels where clipping happens (smallest eigenvalue at the floor) in some variant
rng = np.random.default_rng(1)
pick = set()
for kind in ["dti", "dki"]:
    for meth in ["wls", "ols"]:
        f, M, p = fit(kind, meth, vox, s0, held[0])
        ev = f.evals if kind == "dti" else f.model_params[:, :3]
        clipped = np.where(ev.min(1) <= ev.min() * (1 + 1e-12))[0]
        pick.update(rng.permutation(clipped)[:30].tolist())
        if kind == "dki":
            pick.update(np.argsort(-p)[:15].tolist())
pick.update(rng.choice(len(vox), 200 - len(pick), replace=False).tolist())
sel = np.array(sorted(pick))[:199]
data = np.r_[vox[sel], np.zeros((1, d.shape[-1]))]  # last voxel: all zero -> S0 = 0, not fitted
s0s = np.median(data[:, b0], -1)
fitted = s0s >= 1e-5
out = {"source": "mini phantom voxels (see PROVENANCE.md)", "dipy": "1.12.1",
       "bvals": bvals.tolist(), "bvecs_ras": bvecs.tolist(), "signals": data.tolist(),
       "heldout": held, "pred": {}}
for kind in ["dti", "dki"]:
    for meth in ["wls", "ols"]:
        preds = []
        for k in held:
            _, _, p = fit(kind, meth, data[fitted], s0s[fitted], k)
            full = np.zeros(len(data)); full[fitted] = p
            preds.append(full.tolist())
        out["pred"][f"{kind}_{meth}"] = preds
json.dump(out, open("tests/data/model_extra/model_extra.json", "w"))
print(len(sel), "voxels; clipped picks", len(pick))
