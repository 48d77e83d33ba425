"""Derive the compact tissue template shipped with nifreeze-rs `simulate`.

Input: ../shared/phantoms/mini (clean.nii.gz, brainmask.nii.gz, dwi.bval, dwi.bvec), a
noise-free 4 mm phantom whose anatomy comes from the MNI ICBM152 2009 nonlinear-symmetric
tissue maps (see LICENSE). Output: tissue.nii.gz, 45x54x45x4 uint8 volume fractions x 250
(maps: white matter, grey matter, CSF, scalp) on the same 4 mm RAS grid.

Unmixing (approximate, good enough for a simulator template):
- CSF signal fraction from the powder-averaged b=1000 attenuation a1, mixing linearly between
  parenchyma (a1 ~ 0.47) and free water (a1 ~ 0.05); converted to a volume fraction with a
  CSF/parenchyma proton-density ratio of 2.
- white matter share of the parenchyma from DTI FA (pure WM FA ~ 0.85 in this phantom,
  grey matter is isotropic).
- scalp outside the brain mask: b=0 signal / 600.
Run: python3 data/template/make_template.py ../shared/phantoms/mini data/template/tissue.nii.gz
"""
import sys
import numpy as np
import nibabel as nb
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel

src, out = sys.argv[1], sys.argv[2]
img = nb.load(f"{src}/clean.nii.gz")
c = np.asarray(img.dataobj).astype(float)
m = np.asarray(nb.load(f"{src}/brainmask.nii.gz").dataobj) > 0
bv = np.loadtxt(f"{src}/dwi.bval")
bvec = np.loadtxt(f"{src}/dwi.bvec")
b0 = c[..., bv < 50].mean(-1)
a1 = c[..., (bv > 500) & (bv < 1500)].mean(-1) / np.maximum(b0, 1e-3)
sel = bv < 1500
fit = TensorModel(gradient_table(bv[sel], bvecs=bvec.T[sel])).fit(c[..., sel], mask=m)
fa = np.nan_to_num(fit.fa)

fc_sig = np.clip((0.47 - a1) / (0.47 - 0.05), 0, 1)
csf = (fc_sig / 2) / np.maximum(fc_sig / 2 + (1 - fc_sig), 1e-6)
par = 1 - csf
wm_share = np.clip(fa / (0.85 * np.maximum(1 - fc_sig, 0.05)), 0, 1)
wm = par * wm_share
gm = par - wm
scalp = np.clip(b0 / 600.0, 0, 1)
wm[~m] = gm[~m] = csf[~m] = 0
scalp[m] = 0
maps = np.stack([wm, gm, csf, scalp], -1)
q = np.round(np.clip(maps, 0, 1) * 250).astype(np.uint8)
hdr = nb.Nifti1Header()
hdr.set_data_dtype(np.uint8)
o = nb.Nifti1Image(q, img.affine, hdr)
o.set_sform(img.affine, 1)
o.set_qform(img.affine, 1)
o.header["descrip"] = b"nifreeze-rs tissue template WM GM CSF scalp x250"
nb.save(o, out)
print("saved", out, q.shape, "wm", (q[..., 0] > 125).sum(), "gm", (q[..., 1] > 125).sum(),
      "csf", (q[..., 2] > 125).sum(), "scalp", (q[..., 3] > 125).sum())
