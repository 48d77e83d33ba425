#!/usr/bin/env python3
"""How much of each shell's per-volume error is a quadratic function of the gradient direction.

    python3 benches/direction_pattern.py PHANTOM_DIR ESTIMATE/motion.tsv [MORE motion.tsv ...]

PHANTOM_DIR holds truth.tsv, brainmask.nii.gz, dwi.bval and dwi.bvec. The residual of every
volume (R_k = T_k^-1 E_k G^-1 after score.py's global rigid G; translation at the brain
centroid in mm, rotation in degrees) is regressed, per shell, on 1, gx², gy², gz², gx·gy,
gx·gz, gy·gz. Printed: the residual's sd per axis and the fraction of its variance the six
direction terms explain ("chance" is what random residuals would give, 6 / (n - 1)).

Why: a misregistration that is a quadratic function of g, δ(g), changes each volume by
δ(g)·∇S, which a tensor absorbs voxel by voxel (D' = D - A ∂log S / b): the leave-one-out
prediction reproduces the shift, so registering to it leaves δ(g) in place. Such a pattern
left by the bootstrap (mutual information to b=0) survives every model pass (DKI absorbs
quartic patterns too). See benches/README.md, "Direction patterns the model passes cannot see".
"""
import sys

import nibabel as nb
import numpy as np
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "tools"))
from score import read_truth, read_estimate, kabsch  # noqa: E402


def main():
    ph, runs = sys.argv[1], sys.argv[2:]
    T = read_truth(os.path.join(ph, "truth.tsv"))
    n = len(T)
    b = np.loadtxt(os.path.join(ph, "dwi.bval"))
    g = np.loadtxt(os.path.join(ph, "dwi.bvec"))
    if g.shape[0] != n:
        g = g.T
    m = nb.load(os.path.join(ph, "brainmask.nii.gz"))
    ijk = np.argwhere(np.asarray(m.dataobj) > 0)[::7]
    X = ijk @ m.affine[:3, :3].T + m.affine[:3, 3]
    Xh = np.c_[X, np.ones(len(X))]
    c = X.mean(0)
    for r in runs:
        E = read_estimate(r, n)
        Ys = np.concatenate([(Xh @ (np.linalg.inv(T[k]) @ E[k]).T)[:, :3] for k in range(n)])
        G = kabsch(np.tile(X, (n, 1)), Ys)
        Gi = np.linalg.inv(G)
        R = [np.linalg.inv(T[k]) @ E[k] @ Gi for k in range(n)]
        print(r)
        for s in sorted(set(np.round(b[b > 50], -2))):
            ix = np.where(np.round(b, -2) == s)[0]
            t = np.array([R[k][:3, :3] @ c + R[k][:3, 3] - c for k in ix])
            rot = np.array([[R[k][2, 1] - R[k][1, 2], R[k][0, 2] - R[k][2, 0],
                             R[k][1, 0] - R[k][0, 1]] for k in ix]) / 2 * 180 / np.pi
            q = g[ix]
            A = np.c_[np.ones(len(ix)), q[:, 0] ** 2, q[:, 1] ** 2, q[:, 2] ** 2,
                      q[:, 0] * q[:, 1], q[:, 0] * q[:, 2], q[:, 1] * q[:, 2]]
            Y = np.c_[t, rot]
            Yc = Y - Y.mean(0)
            coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
            fc = A @ coef
            fc -= fc.mean(0)
            frac = (fc ** 2).sum(0) / (Yc ** 2).sum(0)
            print(f"  b={s:.0f} n={len(ix)}: sd xyz (mm) {np.round(Yc[:, :3].std(0), 4)}"
                  f"  explained: translation {np.round(frac[:3], 2)}, rotation {np.round(frac[3:], 2)}"
                  f"  (chance {6 / (len(ix) - 1):.2f})")


if __name__ == "__main__":
    main()
