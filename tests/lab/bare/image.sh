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
# The tag is the sha256 of this script and of ../image-lib.sh (the part the lab's imported images
# share): any change to either builds a new image, an unchanged pair reuses the cached one at once. Needs root and docker; installs mmdebstrap with apt-get if it is missing. The
# Debian mirror is read from this machine's apt sources (override: CLAW_LAB_DEBIAN_MIRROR=URL). Only this
# machine downloads.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SUITE=trixie
REPO_NAME=claw-lab/bare
LOCK=/run/lock/claw-lab-bare-image.lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

NAME=bare/image.sh
# shellcheck source=../image-lib.sh
source "$HERE/../image-lib.sh"

# shellcheck source=../full/debian-mirror.sh
source "$HERE/../full/debian-mirror.sh"

build() {
    local tag=$1 mirror tmp t0=$SECONDS
    need_mmdebstrap
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

lab_image_main "$@"
