#!/usr/bin/env bash
# Evaluate `nifreeze-rs estimate` on phantoms it was not tuned on (issue 5: "it must hold on
# unseen data too"). Each case is simulated with a fixed seed, estimated with dti and dki,
# timed, and scored with `nifreeze-rs compare` (plus ../shared/tools/score.py on xfm/ when
# /work/shared is present, as an independent check of the ITK files). Prints one table.
#
# Usage: benches/estimate_matrix.sh            (from anywhere; no network)
# Environment:
#   WORK=/tmp/nifreeze-eval   where phantoms and outputs go (reused phantoms are regenerated)
#   JOBS=2                    -j for estimate
#   CASES="baseline 2mm3shell oblique_flip oblique single_shell large_motion bench"   subset to run
#   MODELS="dti dki"          models to run where they apply
#   EXTRA_ARGS=""             extra options passed to every estimate run (e.g. "--passes 1")
#   SKIP_BUILD=1              use the existing target/release/nifreeze-rs
# Exit status: 0 if every step behaved as expected (it does not judge accuracy: read the table),
# 1 if any estimate/compare failed unexpectedly.
set -euo pipefail

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=${WORK:-/tmp/nifreeze-eval}
JOBS=${JOBS:-2}
CASES=${CASES:-"baseline 2mm3shell oblique_flip oblique single_shell large_motion bench"}
MODELS=${MODELS:-"dti dki"}
EXTRA_ARGS=${EXTRA_ARGS:-}
SHARED="$ROOT/../shared"
TIME=/usr/bin/time

build_release
[[ -x "$TIME" ]] || { echo "missing $TIME (GNU time)" >&2; exit 1; }
mkdir -p "$WORK"

HAVE_SCORE=0
if [[ -f "$SHARED/tools/score.py" ]] && command -v python3 >/dev/null; then HAVE_SCORE=1; fi

ROWS=()     # table rows, tab separated
FAILED=0

# Simulation parameters per case: fixed seeds, none equal to the bench phantom's design seed.
sim_args() {
    case "$1" in
    baseline) echo "--seed 101 --shells 1000:32,2000:32 --b0 6 --voxel-size 2.5" ;;
    # 2 mm costs ~2x the voxels of 2.5 mm: fewer volumes keep it within the time budget.
    2mm3shell) echo "--seed 202 --shells 1000:16,2000:16,3000:16 --b0 4 --voxel-size 2" ;;
    # Default storage is RAS (det > 0, like the bench phantom); --flip-x stores LAS (det < 0).
    oblique_flip) echo "--seed 303 --shells 1000:32,2000:32 --b0 6 --voxel-size 2.5 --oblique 15 --flip-x" ;;
    oblique) echo "--seed 606 --shells 1000:32,2000:32 --b0 6 --voxel-size 2.5 --oblique 20" ;;
    single_shell) echo "--seed 404 --shells 1000:32 --b0 6 --voxel-size 2.5" ;;
    large_motion) echo "--seed 505 --shells 1000:32,2000:32 --b0 6 --voxel-size 2.5 --max-rot 6 --max-trans 6" ;;
    *) echo "unknown case $1" >&2; return 1 ;;
    esac
}

# json_field FILE: prints "median max" of aligned_mean_mm from `compare --json` output.
json_aligned() {
    awk '/"aligned_mean_mm"/ {f=1; next}
         f && /"max"/ {gsub(/[",]/, "", $2); mx=$2}
         f && /"median"/ {gsub(/[",]/, "", $2); md=$2}
         f && /}/ {f=0}
         END {printf "%.4f %.4f\n", md, mx}' "$1"
}

run_one() {   # case_name phantom_dir model
    local name=$1 ph=$2 model=$3
    local out="$WORK/out/$name-$model" log="$WORK/out/$name-$model.log"
    rm -rf "$out"
    mkdir -p "$WORK/out"
    echo "== $name / $model"
    local rc=0
    # shellcheck disable=SC2086
    "$TIME" -f "%e s %M KB" -o "$out.time" "$BIN" estimate "$ph/dwi.nii.gz" --model "$model" \
        -j "$JOBS" --mask "$ph/brainmask.nii.gz" --no-resample --quiet $EXTRA_ARGS \
        --out "$out" >"$log" 2>&1 || rc=$?
    local wall mem
    wall=$(grep -Eo '^[0-9.]+ s' "$out.time" | tail -n 1 | cut -d' ' -f1 || true)
    mem=$(grep -Eo '[0-9]+ KB' "$out.time" | tail -n 1 | cut -d' ' -f1 || true)
    local orient
    orient=$("$BIN" info "$ph/dwi.nii.gz" | awk '/^orientation:/ {print $2}' || echo '?')

    if [[ $name == single_shell && $model == dki ]]; then
        # DKI needs two non-zero shells: expect a clean input error (exit 2), not a crash.
        local msg
        msg=$(grep -m1 'error' "$log" || true)
        if [[ $rc -eq 2 ]]; then
            echo "   dki on one shell exited 2 as expected: $msg"
            ROWS+=("$name	$model	$orient	exit 2 (expected)	-	-	-	-	-")
        else
            echo "   UNEXPECTED: dki on one shell exited $rc (want 2): $msg" >&2
            ROWS+=("$name	$model	$orient	exit $rc (want 2)	-	-	-	-	-")
            FAILED=1
        fi
        return 0
    fi
    if [[ $rc -ne 0 ]]; then
        echo "   estimate FAILED (exit $rc): $(tail -n 2 "$log" | tr '\n' ' ')" >&2
        ROWS+=("$name	$model	$orient	exit $rc	${wall:--}	-	-	-	-")
        FAILED=1
        return 0
    fi

    local crc=0
    "$BIN" compare --truth "$ph/truth.tsv" --estimate "$out/motion.tsv" \
        --mask "$ph/brainmask.nii.gz" --json >"$out.compare.json" 2>"$out.compare.err" || crc=$?
    local med worst
    if [[ $crc -eq 0 ]]; then
        read -r med worst < <(json_aligned "$out.compare.json")
    else
        echo "   compare FAILED (exit $crc): $(cat "$out.compare.err")" >&2
        med=-; worst=-; FAILED=1
    fi

    local smed=- sworst=-
    if [[ $HAVE_SCORE -eq 1 ]]; then
        # Independent check: score.py reads the per-volume ITK files with nitransforms.
        local line
        if line=$(python3 "$SHARED/tools/score.py" "$ph" "$out/xfm" 2>"$out.score.err" \
            | grep '^aligned error'); then
            smed=$(awk '{for (i=1;i<NF;i++) if ($i=="median") print $(i+1)}' <<<"$line")
            sworst=$(awk '{for (i=1;i<NF;i++) if ($i=="max") print $(i+1)}' <<<"$line")
        else
            echo "   score.py FAILED: $(tail -n 1 "$out.score.err")" >&2
            smed=err; sworst=err; FAILED=1
        fi
    fi
    echo "   ${wall}s, ${mem} KB, median $med mm, worst $worst mm (score.py xfm/: $smed / $sworst)"
    ROWS+=("$name	$model	$orient	ok	$wall	$med	$worst	$smed	$sworst")
}

for name in $CASES; do
    if [[ $name == bench ]]; then
        ph="$SHARED/phantoms/bench"
        if [[ ! -f "$ph/dwi.nii.gz" ]]; then
            echo "== bench: $ph not present, skipped"
            continue
        fi
    else
        ph="$WORK/$name"
        args=$(sim_args "$name")
        echo "== simulate $name: $args"
        rm -rf "$ph"
        # shellcheck disable=SC2086
        "$BIN" simulate --out "$ph" $args 2>&1 | tail -n 1
    fi
    for model in $MODELS; do
        run_one "$name" "$ph" "$model"
    done
done

echo
echo "nifreeze-rs estimate matrix  ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), -j $JOBS${EXTRA_ARGS:+, $EXTRA_ARGS})"
echo "errors: per-volume mean displacement of brain voxels after removing one global rigid (mm)"
{
    printf 'case\tmodel\torient\tstatus\twall_s\tmedian_mm\tworst_mm\tscore.py_median\tscore.py_worst\n'
    printf '%s\n' "${ROWS[@]}"
} | column -t -s $'\t'
exit $FAILED
