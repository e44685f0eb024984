#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets/, entry points in src/fuzzing.rs) with cargo-fuzz and
# libFuzzer, each for a bounded time, one after another, on one core:
#
#   bash scripts/fuzz.sh                 every target, 180 s each
#   bash scripts/fuzz.sh probe 600       one target, 600 s
#   bash scripts/fuzz.sh all 60          every target, 60 s each
#
# Targets: inventory playbook known_hosts ssh_config probe facts.
#
# Toolchain: cargo-fuzz needs a nightly rustc (libFuzzer's coverage flags); it uses the installed
# `nightly` toolchain (`rustup toolchain list`), else the stable one with RUSTC_BOOTSTRAP=1.
# Built with `--sanitizer none` (safe Rust: panics, overflows and aborts are what we look for,
# and it runs several times faster than ASan) and `--debug-assertions` (overflow checks on).
# New inputs that add coverage land in fuzz/corpus/TARGET/ (minimize it, see below, before
# committing); a crash stops the run and is saved in
# fuzz/artifacts/TARGET/: fix it, then copy the input into the corpus so the replay test
# (`cargo test --lib fuzzing`, part of .ci/run) keeps it fixed.
#
#   FUZZ_MINIMIZE=1 bash scripts/fuzz.sh probe      only minimize probe's corpus (libFuzzer -merge)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:-all}
seconds=${2:-180}
all=(inventory playbook known_hosts ssh_config probe facts)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
build=(-s none --debug-assertions)

case $target in
all) targets=("${all[@]}") ;;
*)
    [[ " ${all[*]} " == *" $target "* ]] || { echo "unknown target '$target' (${all[*]})" >&2; exit 2; }
    targets=("$target")
    ;;
esac

# Build once, then run the binaries themselves: `cargo fuzz run` would build again for every
# target (and in a git worktree build.rs makes cargo rebuild the crate each time).
"${fuzz[@]}" build "${build[@]}"
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ -n "${FUZZ_MINIMIZE:-}" ]; then
        # Keep only the inputs that add coverage (libFuzzer's merge into a fresh directory).
        rm -rf "corpus/$t.min" && mkdir "corpus/$t.min"
        "$bin/$t" -merge=1 -timeout=10 -rss_limit_mb=2048 "corpus/$t.min" "corpus/$t"
        rm -rf "corpus/$t" && mv "corpus/$t.min" "corpus/$t"
        continue
    fi
    echo "== fuzz $t for ${seconds}s"
    # -timeout/-rss_limit_mb: an input using more than 10 s or 2 GiB is a finding too.
    "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t"
done
