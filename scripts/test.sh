#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real OpenSSH servers on light
# lab hosts. Works on a fresh machine: installs what the lab needs first. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase reports its time ("phase NAME: N s"), and the end a summary of all of them.
PHASES=()
t_all=$SECONDS
phase() { # NAME COMMAND...
    local name=$1 t=$SECONDS
    shift
    "$@"
    PHASES+=("$name $((SECONDS - t))")
    echo "phase $name: $((SECONDS - t)) s"
}
images() {
    # Full-host lab images (cached in Docker by recipe hash: seconds when warm, minutes cold).
    bash tests/lab/full/image.sh build
    bash tests/lab/full/mirror.sh image
    bash tests/lab/full/pypi.sh build
    bash tests/lab/full/stack.sh build
    bash tests/lab/full/stack.sh gitserver-image
    # The BusyBox userland of tests/portable.rs (a non-Debian host; same cache by recipe hash).
    bash tests/lab/portable/image.sh build
}
phase deps bash tests/lab/lab.sh deps
phase images images
# The tests' build has the feature `test-lockout-switch` (tests/firewall.rs switches the firewall's
# lock-out guard off with it); release and static builds never do.
FEATURES=(--features test-lockout-switch)
phase fmt cargo fmt --all -- --check
# Lints as Cargo.toml's [lints] sets them, warnings as errors; the dependencies it checks are
# shared with the build below (same target/, same features).
phase clippy cargo clippy --locked --all-targets "${FEATURES[@]}" -- -D warnings
phase build cargo build --locked --all-targets "${FEATURES[@]}"
# inventory/prod.toml validates as an operator runs it: placeholder API keys, a throwaway certificate and
# deploy key in place of the operator's files (tests/prod_inventory.rs also checks that it names every
# variable the claw-ai playbook reads).
prod_inventory() {
    local d rc=0
    d=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=claw-ai.example.com -keyout "$d/privkey.pem" -out "$d/fullchain.pem" 2>/dev/null
    echo placeholder >"$d/deploy-key"
    ZHIPUAI_API_KEY=ci-placeholder PINECONE_API_KEY=ci-placeholder target/debug/claw-provision \
        validate inventory/prod.toml -e tls_dir="$d" -e deploy_key_src="$d/deploy-key" || rc=$?
    rm -rf "$d"
    return $rc
}
phase prod-inventory prod_inventory
phase unit-tests cargo test --locked --lib --bins "${FEATURES[@]}"
# The static release binary and the bare Debian image it is tested in (tests/static_binary.rs).
# Both cached: the image by recipe hash, the binary by cargo in target/static.
static_binary() {
    bash tests/lab/bare/image.sh build >/dev/null
    bash scripts/build-static.sh >/dev/null
}
phase static-binary static_binary
# Labs of different tests run side by side; each test brings up and removes its own.
phase integration-tests cargo test --locked --test integration "${FEATURES[@]}" -- --test-threads="${CLAW_TEST_THREADS:-4}"
phase doc-tests cargo test --locked --doc "${FEATURES[@]}"
echo "phases (s): ${PHASES[*]}; total $((SECONDS - t_all)) s"
