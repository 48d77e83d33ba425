#!/usr/bin/env bash
# How precise can the per-volume registration be, given the noise of the volume itself?
# Simulates a phantom with its noise-free, unmoved volumes (`simulate --clean`), registers a
# dozen diffusion-weighted volumes of each shell straight to their own noise-free truth
# (`register --metric ls`, rigid, brain mask: the target a perfect model would predict), and
# scores them against truth.tsv (mean displacement of every 7th brain voxel, no global
# alignment: the clean volumes are in the reference frame). Then runs `estimate` on the same
# phantom and prints its per-shell errors next to the floor (score.py's, after its global
# rigid), and the shells' common offsets (benches/shell_offsets.py).
#
# The gap between the two is what better predictions (model, passes) and a better shell link
# could still gain; the floor itself only a better use of the noisy samples could move.
#
# Usage: benches/noise_floor.sh          (~3 min on 2 cores)
# Environment: SEED=31  SIM_ARGS="--shading 0"  MODEL=dti  PER_SHELL=12  WORK=/tmp/nifreeze-noise-floor
#              SHARED=../shared  SKIP_BUILD=1  NIFREEZE_BIN
set -euo pipefail

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SEED=${SEED:-31}
SIM_ARGS=${SIM_ARGS:-}
MODEL=${MODEL:-dti}
PER_SHELL=${PER_SHELL:-12}
WORK=${WORK:-/tmp/nifreeze-noise-floor}
SHARED=${SHARED:-$ROOT/../shared}

build_release
ph="$WORK/seed$SEED"
rm -rf "$ph" "$WORK/vols" "$WORK/estimate"
mkdir -p "$WORK/vols"
# shellcheck disable=SC2086
"$BIN" simulate --out "$ph" --seed "$SEED" --clean $SIM_ARGS > /dev/null
python3 - "$ph" "$WORK/vols" "$PER_SHELL" <<'PY'
import sys, numpy as np, nibabel as nb
ph, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
clean = nb.load(f"{ph}/clean.nii.gz")
bv = np.loadtxt(f"{ph}/dwi.bval")
shells = sorted({round(b, -2) for b in bv if b > 50})
picked = [i for s in shells for i in [k for k, b in enumerate(bv) if round(b, -2) == s][:n]]
for k in picked:
    vol = np.asarray(clean.dataobj[..., k], dtype=np.float32)
    nb.save(nb.Nifti1Image(vol, clean.affine), f"{out}/clean_{k}.nii.gz")
open(f"{out}/volumes.txt", "w").write(" ".join(map(str, picked)))
PY
for k in $(cat "$WORK/vols/volumes.txt"); do
    "$BIN" register --fixed "$WORK/vols/clean_$k.nii.gz" --moving "$ph/dwi.nii.gz" --volume "$k" \
        --mask "$ph/brainmask.nii.gz" --metric ls --out "$WORK/vols/xfm_$k.tfm" -q
done
"$BIN" estimate "$ph/dwi.nii.gz" --model "$MODEL" -j 2 --out "$WORK/estimate" --no-resample > /dev/null 2>&1
python3 - "$ph" "$WORK/vols" "$WORK/estimate/motion.tsv" "$SHARED/tools/score.py" <<'PY'
import sys, json, subprocess, numpy as np, nibabel as nb
ph, vols, est, score = sys.argv[1:5]
m = nb.load(f"{ph}/brainmask.nii.gz")
ijk = np.argwhere(np.asarray(m.dataobj) > 0)[::7]
X = m.affine @ np.c_[ijk, np.ones(len(ijk))].T
truth, bval = {}, {}
for line in open(f"{ph}/truth.tsv").readlines()[1:]:
    f = line.split("\t")
    truth[int(f[0])] = np.array(list(map(float, f[8:24]))).reshape(4, 4)
    bval[int(f[0])] = round(float(f[1]), -2)
lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK files are LPS
floor = {}
for k in map(int, open(f"{vols}/volumes.txt").read().split()):
    p = [l for l in open(f"{vols}/xfm_{k}.tfm") if l.startswith("Parameters")][0].split()[1:]
    p = list(map(float, p))
    a = np.eye(4)
    a[:3, :3] = np.reshape(p[:9], (3, 3))
    a[:3, 3] = p[9:12]
    err = np.linalg.norm((lps @ a @ lps - truth[k]) @ X, axis=0).mean()
    floor.setdefault(bval[k], []).append(err)
d = json.loads(subprocess.check_output(["python3", score, "--json", ph, est]))
e = np.array(d["per_volume_aligned_mean_mm"])
print(f"seed {ph.rsplit('seed', 1)[1]}: median / worst per-volume error (mm)")
print("| shell | registered to its noise-free truth | estimate |")
print("|---|---|---|")
for b, v in sorted(floor.items()):
    mine = np.array([e[k] for k in bval if bval[k] == b])
    print(f"| b={int(b)} | {np.median(v):.4f} / {np.max(v):.4f} (n={len(v)}) | "
          f"{np.median(mine):.4f} / {mine.max():.4f} (n={len(mine)}) |")
a = d["aligned_mean_mm"]
print(f"| all | | {a['median']:.4f} / {a['max']:.4f} |")
PY
python3 "$ROOT/benches/shell_offsets.py" "$ph" "$WORK/estimate/motion.tsv" --shared "$SHARED" | tail -n 6
