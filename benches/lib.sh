# Sourced by the bench scripts (estimate_matrix.sh, readme_tables.sh, stages.sh): the checkout
# root, the release binary, and building it once unless SKIP_BUILD is set.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# NIFREEZE_BIN: another binary (e.g. a saved build, to compare two versions side by side)
BIN="${NIFREEZE_BIN:-$ROOT/target/release/nifreeze-rs}"

# cd to the root, build the release binary (unless SKIP_BUILD), and stop when it is missing.
build_release() {
    cd "$ROOT"
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        cargo build --release --offline 2>&1 | tail -n 1
    fi
    [[ -x "$BIN" ]] || { echo "missing $BIN (build failed?)" >&2; exit 1; }
}
