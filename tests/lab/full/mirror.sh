#!/usr/bin/env bash
# Signed local apt mirror for the full-host lab (DESIGN.md section 8, issue 3): a docker image, built on this
# machine from Debian packages (mmdebstrap; nothing is pulled), that serves over HTTP on port 80:
#   /debian                 apt repository: suite trixie, component main, this machine's architecture, holding
#                           the packages of mirror/packages and their whole dependency closure; InRelease and
#                           Release.gpg signed with the lab key
#   /unsigned               the same packages and indexes, without InRelease/Release.gpg (apt refuses it)
#   /claw-lab-mirror.asc    the lab key (armored public key)
# Hosts use it as: `deb [signed-by=KEYFILE] http://MIRROR/debian trixie main` (a repository URL plus a key).
#
#   mirror.sh image         print the image tag claw-lab/mirror:<hash12>, building the image if it is missing
#   mirror.sh tag           print the tag only (no docker call, no build)
#   mirror.sh key FILE      write the armored public key to FILE (builds the image if it is missing)
#
# The tag is the sha256 of the recipe (this script and mirror/packages); the image is the cache (the .debs live
# only in it). A build generates a new key, so always take the key from the image (`key`), never keep a copy.
# Needs root, docker, mmdebstrap. The Debian mirror is read from this machine's apt sources
# (override: CLAW_LAB_DEBIAN_MIRROR=URL). Only this machine downloads; the image's server needs no network.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
PKGS_FILE=$HERE/mirror/packages
SUITE=trixie
COMPONENT=main
REPO_NAME=claw-lab/mirror
KEY_LABEL=claw-lab.mirror.key          # image label holding the public key (base64 of the armored key)
WWW=/srv/www                           # served directory inside the image
# Packages of the lab host base (tests/lab/full/image.sh), used only to resolve Recommends the way a host's
# `apt-get install` would; the mirror also holds the closure resolved on an empty system, so a host base
# that differs a little from this list is still covered.
HOST_BASE=openssh-server,ca-certificates,curl,nftables,cron,sudo,iproute2,procps,gnupg,iptables,kmod
LOCK=/run/lock/claw-lab-mirror.lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "mirror.sh: $*" >&2; exit 1; }
say() { echo "mirror.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2; }

tag() {
    local h
    h=$(cat "$SELF" "$PKGS_FILE" | sha256sum)
    echo "$REPO_NAME:${h:0:12}"
}

have_image() { docker image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }

# shellcheck source=debian-mirror.sh
source "$HERE/debian-mirror.sh"

# Runs inside a trixie chroot (host base packages installed, apt lists fresh) made by mmdebstrap; /tmp/mirror
# holds `packages` (one name a line). Leaves the served tree in /tmp/mirror/www, the private key in
# /tmp/mirror/key and the static busybox in /tmp/mirror/rootfs.
inside_script() {
    cat <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
M=/tmp/mirror SUITE=$1 COMPONENT=$2
ARCH=$(dpkg --print-architecture)
T0=$SECONDS
log() { echo "mirror: $((SECONDS - T0)) s: $*" >&2; }
mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$M/packages")
# (mmdebstrap turns Recommends off while it builds; a host's apt-get installs them)
apt_inst() {
    apt-get install -s -o APT::Install-Recommends=true -o APT::Install-Suggests=false "$@" "${PKGS[@]}" |
        awk '/^Inst /{ print $2 }'
}

# closure = top-level packages
#         + every hard dependency, recursively, all alternatives (Depends, Pre-Depends)
#         + what `apt-get install` (with Recommends) adds on the host base
#         + what it adds on an empty system (so hosts whose base lacks something still resolve)
: >"$M/empty.status"
{
    printf '%s\n' "${PKGS[@]}"
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances "${PKGS[@]}" | grep -v '^[[:space:]<]'
    apt_inst
    apt_inst -o Dir::State::status="$M/empty.status"
} | sed 's/:.*//' | sort -u >"$M/closure"
log "$(wc -l <"$M/closure") packages in the closure of ${PKGS[*]}"

R=$M/www/debian
mkdir -p "$R/pool/$COMPONENT" "$R/dists/$SUITE/$COMPONENT/binary-$ARCH" "$M/key" "$M/bb"
chown _apt "$R/pool/$COMPONENT" "$M/bb"
(cd "$R/pool/$COMPONENT" && xargs -a "$M/closure" apt-get download -q=2)
(cd "$M/bb" && apt-get download -q=2 busybox-static && dpkg -x busybox-static_*.deb "$M/rootfs")
log "downloaded $(du -sh "$R/pool" | cut -f1)"

# tools for indexing, installed only after the closure was resolved
apt-get install -y -q=2 --no-install-recommends apt-utils >/dev/null

cd "$R"
apt-ftparchive packages "pool/$COMPONENT" >"dists/$SUITE/$COMPONENT/binary-$ARCH/Packages"
gzip -9nk "dists/$SUITE/$COMPONENT/binary-$ARCH/Packages"
apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=claw-lab \
    -o APT::FTPArchive::Release::Label=claw-lab-mirror \
    -o APT::FTPArchive::Release::Suite="$SUITE" \
    -o APT::FTPArchive::Release::Codename="$SUITE" \
    -o APT::FTPArchive::Release::Architectures="$ARCH" \
    -o APT::FTPArchive::Release::Components="$COMPONENT" \
    -o APT::FTPArchive::Release::Description="claw-provision lab mirror" \
    release "dists/$SUITE" >"$M/Release"
mv "$M/Release" "dists/$SUITE/Release"

# the lab key: new per build, no passphrase, no expiry; temporary GNUPGHOME
export GNUPGHOME=$(mktemp -d)
gpg() { command gpg --batch --quiet --pinentry-mode loopback --passphrase '' "$@"; }
gpg --quick-gen-key 'claw-lab mirror <mirror@claw-lab.invalid>' ed25519 sign never 2>/dev/null
gpg --armor --export >"$M/www/claw-lab-mirror.asc"
gpg --armor --export-secret-keys >"$M/key/claw-lab-mirror.secret.asc"
gpg --with-colons --list-keys | awk -F: '/^fpr/{ print $10; exit }' >"$M/key/fingerprint"
gpg --digest-algo SHA512 --clearsign -o "dists/$SUITE/InRelease" "dists/$SUITE/Release"
gpg --digest-algo SHA512 --detach-sign --armor -o "dists/$SUITE/Release.gpg" "dists/$SUITE/Release"
gpgconf --kill all
rm -rf "$GNUPGHOME"

# /unsigned: same indexes and pool, no signatures
U=$M/www/unsigned
mkdir -p "$U/dists/$SUITE"
cp -a "dists/$SUITE/Release" "dists/$SUITE/$COMPONENT" "$U/dists/$SUITE/"
ln -s ../debian/pool "$U/pool"
log "indexed and signed"
EOF
}

build() {
    local tag=$1 mirror tmp t0=$SECONDS
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing (apt-get install mmdebstrap)"
    docker version >/dev/null || die "docker is not usable"
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /tmp/claw-lab-mirror.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/in"
    cp "$PKGS_FILE" "$tmp/in/packages"
    inside_script >"$tmp/in/build.sh"
    say "building $tag from $mirror ($SUITE) ..."
    # The chroot is thrown away (format null); the hooks copy the result out to $tmp/out.
    TMPDIR=$tmp mmdebstrap --quiet --variant=apt --format=null --include="$HOST_BASE" \
        --customize-hook="cp -a '$tmp/in' \"\$1/tmp/mirror\"" \
        --customize-hook="chroot \"\$1\" bash /tmp/mirror/build.sh '$SUITE' '$COMPONENT'" \
        --customize-hook="mv \"\$1/tmp/mirror\" '$tmp/out'" \
        "$SUITE" /dev/null "$mirror" >&2 || die "mmdebstrap failed"
    say "chroot, downloads and signing done after $((SECONDS - t0)) s"

    # image root: static busybox (httpd) + the served tree + the private key (kept, not served)
    local root=$tmp/out/rootfs a
    mkdir -p "$root/bin" "$root/srv" "$root/tmp" "$root/etc"
    mv "$root/usr/bin/busybox" "$root/bin/busybox"
    rm -rf "$root/usr"
    for a in $("$root/bin/busybox" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    mv "$tmp/out/www" "$root$WWW"
    mv "$tmp/out/key" "$root/srv/key"
    chmod 700 "$root/srv/key"
    chmod 1777 "$root/tmp"
    local pub n
    pub=$(base64 -w0 <"$root$WWW/claw-lab-mirror.asc")
    n=$(find "$root$WWW/debian/pool" -name '*.deb' | wc -l)
    tar -C "$root" --numeric-owner -c . | docker import \
        --change "CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-v\", \"-p\", \"80\", \"-h\", \"$WWW\"]" \
        --change 'EXPOSE 80' \
        --change "LABEL $KEY_LABEL=$pub claw-lab.mirror.packages=$n claw-lab.mirror.suite=$SUITE" \
        --message "claw-lab apt mirror ($SUITE, $n packages)" - "$tag" >/dev/null
    say "built $tag: $n packages, $(du -sh "$root" | cut -f1), in $((SECONDS - t0)) s"
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

key() {
    local file=$1 t
    t=$(image)
    docker image inspect --format "{{ index .Config.Labels \"$KEY_LABEL\" }}" "$t" | base64 -d >"$file.tmp.$$"
    grep -q 'BEGIN PGP PUBLIC KEY BLOCK' "$file.tmp.$$" || { rm -f "$file.tmp.$$"; die "no key in $t"; }
    mv "$file.tmp.$$" "$file"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
    image) [ $# -eq 0 ] || usage; image ;;
    tag) [ $# -eq 0 ] || usage; tag ;;
    key) [ $# -eq 1 ] || usage; key "$1" ;;
    *) usage ;;
esac
