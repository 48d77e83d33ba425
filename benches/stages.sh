#!/usr/bin/env bash
# Where an `estimate` run spends its time and memory, stage by stage (issue 13's profile).
# Each case runs `estimate` as a new user would (computed mask, every output written, `-j 2`),
# under /usr/bin/time; the per-stage wall seconds and peak memory come from the run's own
# summary.json (`timings`), the accuracy from ../shared/tools/score.py. The machine load
# (`uptime`, 1-minute average) is recorded before and after every run: on a shared machine
# compare runs made at the same load, as ratios.
#
# Usage: LABEL=before benches/stages.sh        (~5 min on 2 quiet cores with the defaults)
# Environment:
#   CASES="bench:dti bench:dki ukb:dki"   phantom:model; phantoms: bench (../shared), ukb
#                                         (simulated, UK Biobank size: 2 mm, 1000:50,2000:50,
#                                         5 b0), hcp (simulated, 1.25 mm, 3 × 90 + 18 b0: HCP
#                                         size; ~1 h and ~10 GB, not in the default set)
#   LABEL=after                           the table's name in benches/README.md (replaced
#                                         between its `stages:LABEL` markers, or appended)
#   JOBS=2  WORK=/tmp/nifreeze-stages  SHARED=../shared  SKIP_BUILD=1  NO_README=1
#   EXTRA_ARGS="--passes 1"               added to every estimate
# Exit status 0 when every run succeeded.
set -euo pipefail

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CASES=${CASES:-"bench:dti bench:dki ukb:dki"}
LABEL=${LABEL:-latest}
JOBS=${JOBS:-2}
WORK=${WORK:-/tmp/nifreeze-stages}
SHARED=${SHARED:-$ROOT/../shared}
SCORE="$SHARED/tools/score.py"

build_release
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time (GNU time)" >&2; exit 1; }
mkdir -p "$WORK/out"

phantom() {   # prints the phantom folder, simulating it first when needed
    case "$1" in
    bench | mini | bench_artefacts) echo "$SHARED/phantoms/$1" ;;
    ukb | hcp)
        local args
        if [[ $1 == ukb ]]; then
            args="--voxel-size 2 --shells 1000:50,2000:50 --b0 5"
        else
            args="--voxel-size 1.25 --shells 1000:90,2000:90,3000:90 --b0 18"
        fi
        if [[ ! -f $WORK/$1/truth.tsv ]]; then
            # shellcheck disable=SC2086
            "$BIN" simulate --out "$WORK/$1" $args >&2 || return 1
        fi
        echo "$WORK/$1" ;;
    *) echo "unknown phantom $1" >&2; return 1 ;;
    esac
}
load1() { cut -d' ' -f1 /proc/loadavg; }

FAILED=0
RESULTS=()
for c in $CASES; do
    ph_name=${c%%:*}; model=${c##*:}
    ph=$(phantom "$ph_name") || { echo "cannot prepare $ph_name" >&2; exit 1; }
    out="$WORK/out/$ph_name-$model"
    rm -rf "$out"
    echo "== $ph_name: $model" >&2
    before=$(load1)
    # shellcheck disable=SC2086
    if /usr/bin/time -f '%e %U %S %M' -o "$out.time" "$BIN" estimate "$ph/dwi.nii.gz" \
        --model "$model" -j "$JOBS" ${EXTRA_ARGS:-} --out "$out" 2>"$out.log"; then
        score=$(python3 "$SCORE" --json "$ph" "$out/motion.tsv" 2>/dev/null || echo '{}')
    else
        echo "   failed: see $out.log" >&2; FAILED=1; score='{}'
    fi
    RESULTS+=("$ph_name:$model|$ph|$out|$before|$(load1)|$score")
done

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (with local changes)' || true)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?')
table=$(python3 - "$LABEL" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit$dirty" "$cpu ($(nproc) cores)" "$JOBS" "${RESULTS[@]}" <<'PY'
import json, os, sys
label, date, commit, cpu, jobs = sys.argv[1:6]
cols, stages, rows = [], [], {}
for r in sys.argv[6:]:
    name, ph, out, l0, l1, score = r.split("|", 5)
    s = json.load(open(os.path.join(out, "summary.json"))) if os.path.exists(os.path.join(out, "summary.json")) else {}
    t = open(out + ".time").read().split() if os.path.exists(out + ".time") else []
    wall, user, sys_, rss = (float(t[0]), float(t[1]), float(t[2]), float(t[3]) / 1024) if len(t) >= 4 else (0, 0, 0, 0)
    try:
        import nibabel
        shape = nibabel.load(os.path.join(ph, "dwi.nii.gz")).shape
        f32 = 4 * shape[0] * shape[1] * shape[2] * shape[3] / 2**20
    except Exception:
        f32 = float("nan")
    col = {"name": name, "load": f"{l0} → {l1}", "wall": wall, "cpu": user + sys_, "rss": rss, "f32": f32}
    col["order"] = [st["stage"] for st in s.get("timings", [])]
    for st in s.get("timings", []):
        col[st["stage"]] = st
    try:
        a = json.loads(score)["aligned_mean_mm"]
        col["acc"] = "%.4f / %.4f" % (a["median"], a["max"])
    except Exception:
        col["acc"] = "—"
    cols.append(col)
# rows in run order: a stage one run has and the others lack goes before that run's next
# stage already listed
for c in cols:
    for i, st in enumerate(c["order"]):
        if st in stages:
            continue
        nxt = [stages.index(x) for x in c["order"][i + 1:] if x in stages]
        stages.insert(nxt[0] if nxt else len(stages), st)
def cell(c, st):
    x = c.get(st)
    if not x:
        return ""
    out = "%.1f" % x["seconds"]
    if x.get("cpu_seconds") is not None:
        out += " / %.1f" % x["cpu_seconds"]
    m = x.get("peak_memory_mb")
    return out + (" (%.0f MB)" % m if m is not None else "")
print(f"<!-- stages:{label}:begin -->")
print(f"**{label}** — measured {date} on commit `{commit}`, {cpu}, `estimate --model M -j {jobs}`, computed mask, all outputs")
print("(`benches/stages.sh`); per stage: wall seconds / CPU seconds (where recorded) and, in brackets, the process's")
print("peak memory at the stage's end:")
print()
print("| stage | " + " | ".join(c["name"] for c in cols) + " |")
print("|---|" + "---|" * len(cols))
for st in stages:
    print(f"| {st} | " + " | ".join(cell(c, st) for c in cols) + " |")
print("| **wall / CPU (s)** | " + " | ".join("**%.1f** / %.1f" % (c["wall"], c["cpu"]) for c in cols) + " |")
print("| peak RSS (MB); series as float32 | " + " | ".join("%.0f; %.0f" % (c["rss"], c["f32"]) for c in cols) + " |")
print("| load (1-min average) before → after | " + " | ".join(c["load"] for c in cols) + " |")
print("| median / worst error (mm) | " + " | ".join(c["acc"] for c in cols) + " |")
print(f"<!-- stages:{label}:end -->")
PY
)
echo "$table"
if [[ -z "${NO_README:-}" ]]; then
    python3 - "$ROOT/benches/README.md" "$LABEL" "$table" <<'PY'
import sys
path, label, table = sys.argv[1], sys.argv[2], sys.argv[3] + "\n"
text = open(path).read()
b, e = f"<!-- stages:{label}:begin -->", f"<!-- stages:{label}:end -->\n"
if b in text and e in text:
    text = text[: text.index(b)] + table + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + table
open(path, "w").write(text)
PY
    echo "benches/README.md updated ($LABEL)" >&2
fi
exit $FAILED
