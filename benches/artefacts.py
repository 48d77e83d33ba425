#!/usr/bin/env python3
"""Artefact benchmarks of issues 10 (eddy currents) and 11 (outliers, drift).

Every figure in benches/README.md's "Artefacts" section comes from this script. It simulates
fixed-seed phantoms with `nifreeze-rs simulate` (artefacts switched on), runs `estimate`, and
scores the result against the simulator's truth with `nifreeze-rs compare` (the measure of
../shared/tools/score.py, checked equal to it in tests/compare.rs).

Suites (`--suite`, repeatable; default all):
  bench-dropouts  the shared bench (another generator) with dropouts and drift added to its
            acquired data by this script, 3 seeds: accuracy and detection against the 0.023 /
            0.058 mm the same phantom gives without them.
  outliers  3 seeds of the bench design with 10 % dropout volumes and a 5 % drift, no eddy
            currents, `--transform rigid`: motion accuracy (all volumes, dropout volumes vs the
            others), dropout detection recall/precision, and whether `--repol` brings the
            corrected series closer to the clean truth on the dropout slices (a second run
            without `--repol`). Plus the shared bench (false positives on clean data) and
            bench_artefacts (detection on another generator's dropouts).
  eddy      `--ec 1` phantoms: 3 seeds at 2.5 mm, one at 2 mm, one oblique (20 deg), each with
            `--transform eddy`, dti and dki; the shared bench and bench_artefacts with eddy, rigid
            (back to back: time ratio) and affine, and bench_artefacts with dki.

Usage: python3 benches/artefacts.py [--suite outliers] [--work /tmp/nifreeze-artefacts]
                                     [--shared ../shared] [--jobs 2] [--model dti|dki]
                                     [--mask-source given|computed] [--out FILE.md]
Needs numpy, nibabel and scipy (for the --repol check). Prints a markdown report with the date,
commit and machine load; exit 1 if a run fails.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary under test: this checkout's release build, or $NIFREEZE_BIN.
BIN = os.environ.get("NIFREEZE_BIN", os.path.join(ROOT, "target", "release", "nifreeze-rs"))

# Seeds of the outliers and bench-dropouts suites (--seeds): 11–13 since the suite began;
# `--seeds 11 12 13 14 15 16` shows the spread (eighth session).
OUTLIER_SEEDS = [11, 12, 13]
# (label, simulate arguments) of the eddy-current phantoms.
EDDY_CASES = [
    ("ec1 seed 21, 2.5 mm", ["--seed", "21"]),
    ("ec1 seed 22, 2.5 mm", ["--seed", "22"]),
    ("ec1 seed 23, 2.5 mm", ["--seed", "23"]),
    ("ec1 seed 24, 2 mm", ["--seed", "24", "--voxel-size", "2"]),
    ("ec1 seed 25, oblique 20°", ["--seed", "25", "--oblique", "20"]),
]


def run(cmd, log):
    """Runs a command, its output into `log`; returns wall seconds. Raises on failure."""
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log}")
    return time.time() - t0


def simulate(work, name, args):
    """Simulates a phantom once (kept between runs: the same seed gives the same bytes)."""
    folder = os.path.join(work, name)
    if not os.path.exists(os.path.join(folder, "phantom.json")):
        run([BIN, "simulate", "--out", folder] + args, folder + ".log")
    return folder


# "given": every estimate reads the phantom's brain mask (--mask); "computed": none is given and
# estimate computes its own, as a user who passes no mask gets (set by --mask-source).
MASK_SOURCE = "given"


def estimate(phantom, out, args, jobs):
    cmd = [BIN, "estimate", os.path.join(phantom, "dwi.nii.gz"), "-j", str(jobs),
           "--out", out, "--force"] + args
    if MASK_SOURCE == "given":
        cmd += ["--mask", os.path.join(phantom, "brainmask.nii.gz")]
    return run(cmd, out + ".log")


def compare(phantom, est, artefacts=True):
    cmd = [BIN, "compare", "--truth", os.path.join(phantom, "truth.tsv"),
           "--estimate", os.path.join(est, "motion.tsv"),
           "--mask", os.path.join(phantom, "brainmask.nii.gz"), "--json"]
    art = os.path.join(phantom, "artefacts.json")
    if artefacts and os.path.exists(art) and os.path.exists(os.path.join(est, "outliers.tsv")):
        cmd += ["--artefacts", art, "--outliers", os.path.join(est, "outliers.tsv")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"compare failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def outlier_count(est):
    path = os.path.join(est, "outliers.tsv")
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


def dropout_volume_ratio(phantom, report):
    """Mean error on volumes with dropouts / mean error on the other diffusion-weighted ones."""
    art = json.load(open(os.path.join(phantom, "artefacts.json")))
    drop = {int(k) for k in art["dropouts"]}
    bvals = np.loadtxt(os.path.join(phantom, "dwi.bval")).ravel()
    err = np.asarray(report["per_volume_aligned_mean_mm"])
    dw = bvals > 50
    with_drop = np.array([k in drop for k in range(len(err))])
    a = err[with_drop & dw]
    b = err[~with_drop & dw]
    return float(a.mean()), float(b.mean())


def read_matrices(path):
    """The m00..m33 matrices of a motion table (motion.tsv, truth.tsv), in row order."""
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        idx = [head.index(f"m{r}{c}") for r in range(4) for c in range(4)]
        for line in f:
            cols = line.rstrip("\n").split("\t")
            rows.append(np.array([float(cols[i]) for i in idx]).reshape(4, 4))
    return rows


def read_motion(est):
    return read_matrices(os.path.join(est, "motion.tsv"))


def repol_errors(phantom, est_repol, est_plain):
    """RMS difference from the clean truth, inside the brain, over the reference voxels that
    the acquired dropout slices cover, for the corrected series with and without --repol.

    The clean series lives in the phantom's reference frame, the corrected series in the
    estimate's (the b=0 median): a constant rigid G maps one to the other. G = T_k^-1 E_k is
    taken from the b=0 volumes (median of their parameters, as the frames agree there up to
    the estimation error), and clean is resampled through it. The drift (known per volume)
    is applied to the clean signal, since neither run divides it out."""
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    art = json.load(open(os.path.join(phantom, "artefacts.json")))
    drift = np.asarray(art["drift"])
    truth = read_motion_truth(phantom)
    est = read_motion(est_repol)
    bvals = np.loadtxt(os.path.join(phantom, "dwi.bval")).ravel()
    b0 = [k for k in range(len(bvals)) if bvals[k] <= 50]
    gs = np.array([np.linalg.inv(truth[k]) @ est[k] for k in b0])
    g = np.median(gs, axis=0)
    clean_img = nib.load(os.path.join(phantom, "clean.nii.gz"))
    clean = clean_img.get_fdata(dtype=np.float32)
    aff = clean_img.affine
    inv_aff = np.linalg.inv(aff)
    mask = np.asarray(nib.load(os.path.join(phantom, "brainmask.nii.gz")).dataobj) > 0
    rep = nib.load(os.path.join(est_repol, "dwi_corrected.nii.gz"))
    plain = nib.load(os.path.join(est_plain, "dwi_corrected.nii.gz"))
    assert np.allclose(rep.affine, aff, atol=1e-4), "corrected series is on another grid"
    ijk = np.indices(mask.shape).reshape(3, -1)
    ijk = ijk[:, mask.ravel()]
    ras = aff[:3, :3] @ ijk + aff[:3, 3:4]
    ras_h = np.vstack([ras, np.ones(ras.shape[1])])
    sq = {"repol": 0.0, "plain": 0.0}
    n = 0
    for key, slices in art["dropouts"].items():
        k = int(key)
        dropped = {s for s, _ in slices}
        # Where each reference brain voxel sits in acquired volume k: which slice it comes from.
        acq = inv_aff @ (est[k] @ ras_h)
        sel = np.isin(np.rint(acq[2]).astype(int), list(dropped))
        if not sel.any():
            continue
        # The clean signal at the same head point: reference point x of the estimate's frame
        # is G x in the phantom's frame.
        src = inv_aff @ (g @ ras_h[:, sel])
        ref = map_coordinates(clean[..., k], src[:3], order=1, mode="nearest") * drift[k]
        vox = tuple(ijk[:, sel])
        r = np.asarray(rep.dataobj[..., k], dtype=np.float32)[vox]
        p = np.asarray(plain.dataobj[..., k], dtype=np.float32)[vox]
        sq["repol"] += float(((r - ref) ** 2).sum())
        sq["plain"] += float(((p - ref) ** 2).sum())
        n += int(sel.sum())
    return {k: (v / max(n, 1)) ** 0.5 for k, v in sq.items()}, n


def read_motion_truth(phantom):
    """truth_rigid.tsv when present (the head motion alone), else truth.tsv."""
    rigid = os.path.join(phantom, "truth_rigid.tsv")
    return read_matrices(rigid if os.path.exists(rigid) else os.path.join(phantom, "truth.tsv"))


def fmt(x, d=3):
    return "—" if x is None else f"{x:.{d}f}"


def suite_outliers(a, lines):
    lines += ["### Outliers and drift (issue 11): own phantoms, 10 % dropout volumes, 5 % drift, "
              "rigid motion only", "",
              "`simulate --dropout 0.1 --drift 5 --clean --seed S` (bench design); `estimate "
              f"--model {a.model} --transform rigid --repol`, and once more without `--repol`. "
              "The same seed simulated without `--dropout` has the same motion, noise and drift "
              "(the simulator draws each from its own stream): estimated too, it gives the error "
              "of the very volumes that carry dropouts when they carry none (\"same vols, no "
              "dropouts\"), which separates the dropouts' effect from which volumes they fell on "
              "(b=2000 volumes have about twice the error of b=1000 ones).", "",
              "| phantom | median / worst (mm) | dropout vols / others, mean (mm) | ratio | "
              "same vols, no dropouts (mm) | with / without | "
              "recall | precision | RMS vs clean on dropout slices: repol / kept | wall (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for seed in a.seeds:
        ph = simulate(a.work, f"ol{seed}", ["--seed", str(seed), "--dropout", "0.1",
                                            "--drift", "5", "--clean"])
        er = os.path.join(a.work, f"ol{seed}_repol")
        ep = os.path.join(a.work, f"ol{seed}_plain")
        wall = estimate(ph, er, ["--model", a.model, "--repol"], a.jobs)
        estimate(ph, ep, ["--model", a.model], a.jobs)
        rep = compare(ph, er)
        d, o = dropout_volume_ratio(ph, rep)
        # the same volumes, simulated and estimated without the dropouts
        nd = simulate(a.work, f"ol{seed}_nodrop", ["--seed", str(seed), "--drift", "5"])
        en = os.path.join(a.work, f"ol{seed}_nodrop_est")
        estimate(nd, en, ["--model", a.model, "--no-resample"], a.jobs)
        d0, _ = dropout_volume_ratio(ph, compare(nd, en, artefacts=False))
        det = rep.get("dropout_detection", {})
        rms, n = repol_errors(ph, er, ep)
        m = rep["aligned_mean_mm"]
        lines.append(f"| seed {seed} | {fmt(m['median'])} / {fmt(m['max'])} | {fmt(d)} / {fmt(o)} "
                     f"| {fmt(d / o, 2)} | {fmt(d0)} | {fmt(d / d0, 2)} | "
                     f"{fmt(det.get('recall'), 2)} | "
                     f"{fmt(det.get('precision'), 2)} | {rms['repol']:.1f} / {rms['plain']:.1f} "
                     f"({n} voxels) | {wall:.0f} |")
        print(lines[-1], flush=True)
    # Another generator's dropouts (with eddy currents, so the eddy model), and clean data.
    for name, args in (("bench_artefacts", ["--transform", "eddy", "--pe-dir", "j"]),
                       ("bench", [])):
        ph = os.path.join(a.shared, "phantoms", name)
        if not os.path.isdir(ph):
            lines.append(f"| {name} | SKIPPED: {ph} missing | | | | | | | | |")
            continue
        est = os.path.join(a.work, f"{name}_ol")
        wall = estimate(ph, est, ["--model", a.model, "--no-resample"] + args, a.jobs)
        rep = compare(ph, est)
        m = rep["aligned_mean_mm"]
        det = rep.get("dropout_detection", {})
        if name == "bench":
            nvol_slices = 70 * 71
            extra = f"{outlier_count(est)} outlier slices reported of {nvol_slices}"
            lines.append(f"| {name} (clean) | {fmt(m['median'])} / {fmt(m['max'])} | | | | | | | "
                         f"{extra} | {wall:.0f} |")
        else:
            d, o = dropout_volume_ratio(ph, rep)
            lines.append(f"| {name} (eddy) | {fmt(m['median'])} / {fmt(m['max'])} | {fmt(d)} / "
                         f"{fmt(o)} | {fmt(d / o, 2)} | — | — | {fmt(det.get('recall'), 2)} | "
                         f"{fmt(det.get('precision'), 2)} | | {wall:.0f} |")
        print(lines[-1], flush=True)
    lines.append("")


def inject(shared, work, seed):
    """The shared bench phantom (another generator, rigid motion only) with this project's
    artefacts added to its acquired data: 10 % of the diffusion-weighted volumes get 1-3
    interleaved slices (third voxel axis, inside the brain) kept at 5-40 % of their signal, and
    every volume is scaled by a 5 % linear-plus-quadratic drift. Dropouts and drift act on the
    acquired image, so adding them afterwards is what the scanner does. Writes a phantom folder
    with artefacts.json in the simulator's schema; truth.tsv is the bench's (motion unchanged)."""
    import shutil
    import nibabel as nib

    src = os.path.join(shared, "phantoms", "bench")
    folder = os.path.join(work, f"benchdrop{seed}")
    if os.path.exists(os.path.join(folder, "artefacts.json")):
        return folder
    os.makedirs(folder, exist_ok=True)
    for f in ("dwi.bval", "dwi.bvec", "brainmask.nii.gz", "truth.tsv"):
        shutil.copy(os.path.join(src, f), folder)
    img = nib.load(os.path.join(src, "dwi.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.float64)
    mask = np.asarray(nib.load(os.path.join(src, "brainmask.nii.gz")).dataobj) > 0
    bvals = np.loadtxt(os.path.join(src, "dwi.bval")).ravel()
    rng = np.random.default_rng(seed)
    dw = np.flatnonzero(bvals > 50)
    n = data.shape[3]
    t = np.arange(n) / max(n - 1, 1)
    drift = 1.0 - 0.05 * (0.6 * t + 0.4 * t * t)
    brain_slices = np.flatnonzero(mask.sum(axis=(0, 1)) > 0.3 * mask.sum(axis=(0, 1)).max())
    dropouts = {}
    for k in sorted(rng.choice(dw, size=int(round(0.1 * len(dw))), replace=False)):
        count = int(rng.integers(1, 4))
        first = int(rng.choice(brain_slices[: len(brain_slices) - 2 * count]))
        rows = []
        for j in range(count):
            sl = first + 2 * j
            frac = float(rng.uniform(0.05, 0.40))
            data[:, :, sl, k] *= frac
            rows.append([sl, frac])
        dropouts[str(int(k))] = rows
    data *= drift[None, None, None, :]
    out = nib.Nifti1Image(np.rint(data).astype(np.int16), img.affine, img.header)
    out.header.set_data_dtype(np.int16)
    out.header["scl_slope"] = 1.0
    out.header["scl_inter"] = 0.0
    nib.save(out, os.path.join(folder, "dwi.nii.gz"))
    with open(os.path.join(folder, "artefacts.json"), "w") as f:
        json.dump({"note": "shared bench + dropouts and drift added to the acquired data by "
                           "benches/artefacts.py", "dropouts": dropouts,
                   "drift": drift.tolist(), "eddy_currents": None}, f, indent=1)
    return folder


def suite_bench_dropouts(a, lines):
    lines += ["### Outliers and drift (issue 11): the shared bench with dropouts and drift added",
              "", "The shared bench phantom (another generator; 0.023 / 0.058 mm without "
              "artefacts with the same options, 0 outlier slices) with 10 % dropout volumes (1–3 interleaved slices at 5–40 %) and a 5 % "
              "drift added to its acquired data, 3 seeds; `estimate --model " + a.model + " --transform "
              "rigid --no-resample`.", "",
              "| phantom | median / worst (mm) | dropout vols / others, mean (mm) | ratio | "
              "recall | precision | wall (s) |", "|---|---|---|---|---|---|---|"]
    if not os.path.isdir(os.path.join(a.shared, "phantoms", "bench")):
        lines += ["| SKIPPED: shared bench missing | | | | | | |", ""]
        return
    for seed in a.seeds:
        ph = inject(a.shared, a.work, seed)
        est = os.path.join(a.work, f"benchdrop{seed}_est")
        wall = estimate(ph, est, ["--model", a.model, "--no-resample"], a.jobs)
        rep = compare(ph, est)
        d, o = dropout_volume_ratio(ph, rep)
        det = rep.get("dropout_detection", {})
        m = rep["aligned_mean_mm"]
        lines.append(f"| bench + dropouts, seed {seed} | {fmt(m['median'])} / {fmt(m['max'])} | "
                     f"{fmt(d)} / {fmt(o)} | {fmt(d / o, 2)} | {fmt(det.get('recall'), 2)} | "
                     f"{fmt(det.get('precision'), 2)} | {wall:.0f} |")
        print(lines[-1], flush=True)
    lines.append("")


def suite_eddy(a, lines):
    lines += ["### Eddy currents (issue 10): `--transform eddy`, scored against the full maps", "",
              "`simulate --ec 1 --pe-dir j` plus the options shown (bench design otherwise); "
              "`estimate --transform eddy --pe-dir j --no-resample`. On the shared phantoms the "
              "same with `--transform rigid`, run back to back, for the time ratio (one run "
              "each: `benches/eddy_cost.sh` repeats them), and with `--transform affine`.", "",
              "| phantom | model | eddy: median / worst (mm) | rigid: median / worst (mm) | "
              "affine: median / worst (mm) | wall eddy / rigid (s) | ratio |",
              "|---|---|---|---|---|---|---|"]
    cases = [(lab, simulate(a.work, f"ec{args[1]}", ["--ec", "1", "--pe-dir", "j"] + args),
              model, False) for model in ("dti", "dki") for lab, args in EDDY_CASES]
    for name in ("bench", "bench_artefacts"):
        ph = os.path.join(a.shared, "phantoms", name)
        if os.path.isdir(ph):
            cases.append((name, ph, "dti", True))
        else:
            lines.append(f"| {name} | SKIPPED: {ph} missing | | | | | |")
    ba = os.path.join(a.shared, "phantoms", "bench_artefacts")
    if os.path.isdir(ba):
        cases.append(("bench_artefacts", ba, "dki", False))
    for lab, ph, model, with_rigid in cases:
        tag = lab.replace(" ", "_").replace(",", "").replace("°", "")
        ee = os.path.join(a.work, f"{tag}_{model}_eddy")
        we = estimate(ph, ee, ["--model", model, "--transform", "eddy", "--pe-dir", "j",
                               "--no-resample"], a.jobs)
        e = compare(ph, ee, artefacts=False)["aligned_mean_mm"]
        rigid, affine, walls, ratio = "—", "—", f"{we:.0f} / —", "—"
        if with_rigid:
            er = os.path.join(a.work, f"{tag}_{model}_rigid")
            wr = estimate(ph, er, ["--model", model, "--no-resample"], a.jobs)
            r = compare(ph, er, artefacts=False)["aligned_mean_mm"]
            rigid, walls, ratio = (f"{fmt(r['median'])} / {fmt(r['max'])}", f"{we:.0f} / {wr:.0f}",
                                   f"{we / wr:.2f}")
            ea = os.path.join(a.work, f"{tag}_{model}_affine")
            estimate(ph, ea, ["--model", model, "--transform", "affine", "--no-resample"], a.jobs)
            f = compare(ph, ea, artefacts=False)["aligned_mean_mm"]
            affine = f"{fmt(f['median'])} / {fmt(f['max'])}"
        lines.append(f"| {lab} | {model} | {fmt(e['median'])} / {fmt(e['max'])} | {rigid} | "
                     f"{affine} | {walls} | {ratio} |")
        print(lines[-1], flush=True)
    lines.append("")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", action="append", choices=["outliers", "bench-dropouts", "eddy"])
    p.add_argument("--work", default="/tmp/nifreeze-artefacts")
    p.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--model", default="dti", choices=["dti", "dki"],
                   help="model of the outliers and bench-dropouts suites (default dti)")
    p.add_argument("--out", help="also write the markdown here")
    p.add_argument("--seeds", type=int, nargs="+", default=OUTLIER_SEEDS,
                   help="simulator seeds of the outliers and bench-dropouts suites "
                        "(default 11 12 13; 14 15 16 show the spread)")
    p.add_argument("--mask-source", default="given", choices=["given", "computed"],
                   help="estimate with the phantom's brain mask (default) or the computed one")
    a = p.parse_args()
    global MASK_SOURCE
    MASK_SOURCE = a.mask_source
    os.makedirs(a.work, exist_ok=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]
    lines = [f"Measured {datetime.date.today()} on commit {commit}, {os.cpu_count()} cores, "
             f"`-j {a.jobs}`, {a.mask_source} brain mask, load average {load:.1f} at the start.", ""]
    suites = {"outliers": suite_outliers, "bench-dropouts": suite_bench_dropouts,
              "eddy": suite_eddy}
    for suite in a.suite or list(suites):
        suites[suite](a, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
