#!/usr/bin/env bash
# What `--transform eddy` costs against `--transform rigid` (issue 10's bar: at most 1.5x on the
# shared bench): the two run alternately (rigid, eddy, rigid, eddy, ...) REPEATS times each on
# the same phantom, `estimate -j 2 --no-resample`, computed mask; prints each run's wall and CPU
# (user + system) seconds and the medians' ratios. Run it on a quiet machine (the load average
# is printed before and after); no thresholds, a measurement.
#
# Usage: benches/eddy_cost.sh [PHANTOM_DIR]   (default ../shared/phantoms/bench)
# Environment: REPEATS=3, MODEL=dti, BIN=target/release/nifreeze-rs, WORK=/tmp/nifreeze-eddy-cost
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PH=${1:-$ROOT/../shared/phantoms/bench}
REPEATS=${REPEATS:-3}
MODEL=${MODEL:-dti}
BIN=${BIN:-$ROOT/target/release/nifreeze-rs}
WORK=${WORK:-/tmp/nifreeze-eddy-cost}
mkdir -p "$WORK"
echo "phantom $PH, model $MODEL, $REPEATS repeats, commit $(git -C "$ROOT" rev-parse --short HEAD), load $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq "$REPEATS"); do
    for t in rigid eddy; do
        /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$BIN" estimate "$PH/dwi.nii.gz" --model "$MODEL" \
            --transform "$t" --pe-dir j -j 2 --no-resample --force --out "$WORK/$t" > "$WORK/$t.log" 2>&1
        read -r wall user sys < "$WORK/time"
        echo "$t $wall $(awk -v u="$user" -v s="$sys" "BEGIN{print u + s}")" | tee -a "$WORK/runs"
    done
done
python3 - "$WORK/runs" "$REPEATS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()][-2 * int(sys.argv[2]):]
med = {t: [statistics.median(float(r[i]) for r in rows if r[0] == t) for i in (1, 2)]
       for t in ("rigid", "eddy")}
print(f"median wall rigid {med['rigid'][0]:.2f} s, eddy {med['eddy'][0]:.2f} s: ratio {med['eddy'][0] / med['rigid'][0]:.2f}")
print(f"median CPU  rigid {med['rigid'][1]:.2f} s, eddy {med['eddy'][1]:.2f} s: ratio {med['eddy'][1] / med['rigid'][1]:.2f}")
PY
echo "load after $(cut -d' ' -f1 /proc/loadavg)"
