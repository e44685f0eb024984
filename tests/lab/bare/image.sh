#!/usr/bin/env bash
# A bare Debian image for the static binary's test (tests/static_binary.rs): Debian trixie's
# `essential` package set only (glibc, coreutils, dash, dpkg; not even apt, which would bring libssl;
# no Rust toolchain, no OpenSSH, no CA certificates), built on this machine from Debian packages (mmdebstrap -> docker import; nothing is
# pulled from a registry), like the full lab's host image (tests/lab/full/image.sh).
#
#   image.sh build     print the image tag claw-lab/bare:<hash12>, building the image if it is missing
#   image.sh tag       print the tag only (no docker call, no build)
#   image.sh prune     remove claw-lab/bare images whose tag is not the current recipe's
#
# The tag is the sha256 of this script: any change to it builds a new image, an unchanged script reuses
# the cached one at once. Needs root and docker; installs mmdebstrap with apt-get if it is missing. The
# Debian mirror is read from this machine's apt sources (override: CLAW_LAB_DEBIAN_MIRROR=URL). Only this
# machine downloads.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SUITE=trixie
REPO_NAME=claw-lab/bare
LOCK=/run/lock/claw-lab-bare-image.lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "bare/image.sh: $*" >&2; exit 1; }
say() { echo "bare/image.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2; }

tag() {
    local h
    h=$(sha256sum <"$SELF")
    echo "$REPO_NAME:${h:0:12}"
}

have_image() { docker image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }

# shellcheck source=../full/debian-mirror.sh
source "$HERE/../full/debian-mirror.sh"

build() {
    local tag=$1 mirror tmp t0=$SECONDS
    if ! command -v mmdebstrap >/dev/null; then
        say "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2; } ||
            die "apt-get install mmdebstrap failed"
    fi
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /tmp/claw-lab-bare.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    say "building $tag from $mirror ($SUITE, essential) ..."
    TMPDIR=$tmp mmdebstrap --variant=essential --format=tar \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tmp/rootfs.tar" "$mirror" >"$tmp/mmdebstrap.log" 2>&1 ||
        { tail -n 30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    docker import \
        --change 'CMD ["/bin/sh"]' \
        --change "LABEL claw-lab.kind=bare claw-lab.suite=$SUITE" \
        --message "claw-lab bare Debian ($SUITE essential)" "$tmp/rootfs.tar" "$tag" >/dev/null
    say "built $tag in $((SECONDS - t0)) s ($(du -h "$tmp/rootfs.tar" | cut -f1) root file system)"
    rm -rf "$tmp"; trap - EXIT
}

image() {
    local t
    t=$(tag)
    if ! have_image "$t"; then
        [ "$(id -u)" = 0 ] || die "must run as root to build the image"
        mkdir -p "$(dirname "$LOCK")"
        exec 9>"$LOCK"
        flock 9                           # one build at a time; a parallel caller then finds the image
        have_image "$t" || build "$t"
        exec 9>&-
    fi
    echo "$t"
}

prune() { # images still used by a container are kept
    local t i
    t=$(tag)
    for i in $(docker images --format '{{.Repository}}:{{.Tag}}' "$REPO_NAME" | grep -vxF "$t" || true); do
        if docker rmi "$i" >/dev/null 2>&1; then say "removed $i"; else say "kept $i (in use)"; fi
    done
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
    build|image) [ $# -eq 0 ] || usage; image ;;
    tag) [ $# -eq 0 ] || usage; tag ;;
    prune) [ $# -eq 0 ] || usage; prune ;;
    *) usage ;;
esac
