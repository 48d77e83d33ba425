#!/usr/bin/env python3
"""Where a motion estimate's error sits, per shell, and what a perfect shell link would give.

    python3 benches/shell_offsets.py PHANTOM_DIR ESTIMATE/motion.tsv [--shared ../shared]

PHANTOM_DIR holds truth.tsv, brainmask.nii.gz and dwi.b (as `nifreeze-rs simulate` writes
them, or ../shared/phantoms/NAME). The error is score.py's: mean displacement of brain voxels
(every 7th) after one global rigid common to all volumes. Per shell (b=0 first) it prints the
median and worst volume, the mean residual R_k = T_k^-1 E_k G^-1 at the brain centroid (the
shell's common offset, x y z mm) and its per-volume sd (the scatter).

The last two lines are an upper bound of what the shell link (the last stage of `estimate`)
can still gain: each shell's mean residual removed (the perfect link), for the
diffusion-weighted shells only ("dw") and for every shell including b=0 ("all"). What is left
is the per-volume scatter, which the link cannot touch.
"""
import argparse
import os
import sys

import numpy as np
import nibabel as nb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phantom")
    ap.add_argument("estimate")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(a.shared, "tools"))
    from score import read_truth, read_estimate, kabsch

    T = read_truth(os.path.join(a.phantom, "truth.tsv"))
    n = len(T)
    E = read_estimate(a.estimate, n)
    b = np.array([float(l.split()[3]) for l in open(os.path.join(a.phantom, "dwi.b"))])
    m = nb.load(os.path.join(a.phantom, "brainmask.nii.gz"))
    ijk = np.argwhere(np.asarray(m.dataobj) > 0)[::7]
    X = ijk @ m.affine[:3, :3].T + m.affine[:3, 3]
    Xh = np.c_[X, np.ones(len(X))]
    c = X.mean(0)

    def score(EE):
        Ys = np.concatenate([(Xh @ (np.linalg.inv(T[k]) @ EE[k]).T)[:, :3] for k in range(n)])
        G = kabsch(np.tile(X, (n, 1)), Ys)
        err = np.array([np.linalg.norm(Xh @ (EE[k] - T[k] @ G).T, axis=1).mean() for k in range(n)])
        return err, G

    err, G = score(E)
    Gi = np.linalg.inv(G)
    shells = sorted(set(np.round(b[b >= 50], -2)))
    groups = [("b=0", np.where(b < 50)[0])] + [
        (f"b={s:.0f}", np.where((b >= 50) & (np.round(b, -2) == s))[0]) for s in shells]
    residual = [np.linalg.inv(T[k]) @ E[k] @ Gi for k in range(n)]
    for name, ix in groups:
        if len(ix) == 0:
            continue
        shift = np.array([r[:3, :3] @ c + r[:3, 3] - c for r in (residual[k] for k in ix)])
        print(f"{name:7s} n={len(ix):3d}  median {np.median(err[ix]):.4f}  worst {err[ix].max():.4f}"
              f"  common offset {np.round(shift.mean(0), 4)}  sd {np.round(shift.std(0), 4)}")
    print(f"all      n={n:3d}  median {np.median(err):.4f}  worst {err.max():.4f}")
    for which in ("dw", "all"):
        E2 = E.copy()
        for gi, (_, ix) in enumerate(groups):
            if (which == "dw" and gi == 0) or len(ix) == 0:
                continue
            mean = np.mean([residual[k] for k in ix], 0)
            fix = Gi @ np.linalg.inv(mean) @ G
            for k in ix:
                E2[k] = E[k] @ fix
        e2, _ = score(E2)
        print(f"perfect link ({which}): median {np.median(e2):.4f}  worst {e2.max():.4f}")


if __name__ == "__main__":
    main()
