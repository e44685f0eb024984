#!/usr/bin/env bash
# Builds claw-provision as ONE static file: a release build linked statically against glibc
# (`-C target-feature=+crt-static`), which runs on any x86_64 Linux without installing anything.
# The explicit --target keeps build scripts and proc macros dynamic (they run on this machine only);
# its own target directory (target/static, or CLAW_STATIC_TARGET_DIR) keeps it apart from the normal
# build. Checks that the result has no program interpreter and needs no shared library, then prints
# its path (the last line of stdout). What stays dynamic in a static glibc binary (NSS modules other
# than files and dns, for getaddrinfo and getpwuid_r) is in README "One file to install"; the default
# linker (rust-lld) drops glibc's link-time warnings about it, GNU ld prints them:
#   touch src/main.rs; RUSTFLAGS="-C target-feature=+crt-static -W linker-messages" cargo rustc --release \
#     --target x86_64-unknown-linux-gnu --target-dir target/static --bin claw-provision -- -C link-arg=-fuse-ld=bfd
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=x86_64-unknown-linux-gnu
DIR=${CLAW_STATIC_TARGET_DIR:-target/static}
die() { echo "build-static.sh: $*" >&2; exit 1; }

RUSTFLAGS="-C target-feature=+crt-static -W linker-messages" \
    cargo build --locked --release --target "$TRIPLE" --target-dir "$DIR" --bin claw-provision >&2
bin=$DIR/$TRIPLE/release/claw-provision
[ -x "$bin" ] || die "no binary at $bin"
# Static: no PT_INTERP (ELF interpreter, ld-linux) and no DT_NEEDED (shared libraries).
if readelf -lW "$bin" | grep -q 'INTERP'; then die "$bin has a program interpreter: not static"; fi
if readelf -dW "$bin" | grep -q '(NEEDED)'; then die "$bin needs shared libraries: $(readelf -dW "$bin" | grep '(NEEDED)')"; fi
echo "build-static.sh: $(file -b "$bin" | grep -o "static-pie linked\|statically linked"), $(du -h "$bin" | cut -f1)" >&2
realpath "$bin"
