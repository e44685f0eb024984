#!/usr/bin/env bash
# A non-Debian userland for tests/portable.rs: BusyBox and OpenSSH's sshd, nothing else. Every
# command on PATH is a BusyBox applet (no GNU coreutils, findutils or util-linux, no dpkg-query,
# no apt, no sudo); sshd and the shared libraries it links are the only other programs. The
# os-release says ID=claw-busybox. Root logs in with a key (no sudo needed).
#
# Built on this machine from Debian packages (busybox-static and openssh-server, fetched by
# mmdebstrap; nothing is pulled from a registry): the packages are unpacked in a scratch Debian
# root, from which only /bin/busybox, sshd's programs and the libraries `ldd` names are copied
# into the image's root, then `docker import`ed, like the bare image (tests/lab/bare/image.sh).
#
#   image.sh build     print the image tag claw-lab/portable:<hash12>, building the image if it is missing
#   image.sh tag       print the tag only (no docker call, no build)
#   image.sh prune     remove claw-lab/portable images whose tag is not the current recipe's
#
# The container runs `sshd -D -e` and expects, mounted at /claw: `ssh_host_ed25519_key` (0600) and
# `authorized_keys` (root's). The tag is the sha256 of this script and of ../image-lib.sh (the part the
# lab's imported images share): any change to either builds a new image, an unchanged pair reuses
# the cached one at once. Needs root and docker; installs
# mmdebstrap with apt-get if it is missing. The Debian mirror is read from this machine's apt sources
# (override: CLAW_LAB_DEBIAN_MIRROR=URL).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SUITE=trixie
REPO_NAME=claw-lab/portable
LOCK=/run/lock/claw-lab-portable-image.lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

NAME=portable/image.sh
# shellcheck source=../image-lib.sh
source "$HERE/../image-lib.sh"

# shellcheck source=../full/debian-mirror.sh
source "$HERE/../full/debian-mirror.sh"

# The image's root from the scratch Debian root DEB into ROOT.
assemble() { # DEB ROOT
    local deb=$1 root=$2 a f progs
    mkdir -p "$root"/{bin,etc/ssh,root,tmp,run/sshd,var/empty,var/lib,var/tmp,usr/sbin,usr/lib/openssh,claw,srv,opt}
    chmod 0700 "$root/root"
    chmod 1777 "$root/tmp" "$root/var/tmp"
    # BusyBox, one link per applet in /bin (the only directory of commands).
    cp "$deb/bin/busybox" "$root/bin/busybox"
    for a in $(chroot "$deb" /bin/busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
    done
    # sshd (OpenSSH splits it into sshd, sshd-session and sshd-auth) and the libraries it links.
    cp "$deb/usr/sbin/sshd" "$root/usr/sbin/sshd"
    progs=(/usr/sbin/sshd)
    for f in sshd-session sshd-auth; do
        [ -e "$deb/usr/lib/openssh/$f" ] || continue
        cp "$deb/usr/lib/openssh/$f" "$root/usr/lib/openssh/$f"
        progs+=("/usr/lib/openssh/$f")
    done
    for f in $(chroot "$deb" ldd "${progs[@]}" | sed -n 's/.*[[:space:]]\(\/[^[:space:]]*\) (0x.*/\1/p' | sort -u); do
        (cd "$deb" && cp -L --parents ".$f" "$root/")
    done
    [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "the loader was not copied (ldd: ${progs[*]})"
    cat >"$root/etc/os-release" <<'EOF'
NAME="claw BusyBox lab"
ID=claw-busybox
VERSION_ID=1
PRETTY_NAME="claw BusyBox lab 1 (BusyBox userland, OpenSSH)"
EOF
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'sshd:x:100:65534:sshd:/run/sshd:/bin/false' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
    printf '%s\n' 'root:*:20000:0:99999:7:::' 'sshd:!:20000::::::' 'nobody:!:20000::::::' >"$root/etc/shadow"
    chmod 0640 "$root/etc/shadow"
    printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files' >"$root/etc/nsswitch.conf"
    cat >"$root/etc/ssh/sshd_config" <<'EOF'
Port 22
HostKey /claw/ssh_host_ed25519_key
AuthorizedKeysFile /claw/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
PidFile /run/sshd.pid
EOF
}

build() {
    local tag=$1 mirror tmp t0=$SECONDS
    need_mmdebstrap
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /tmp/claw-lab-portable.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    say "building $tag from $mirror ($SUITE: busybox-static, openssh-server) ..."
    TMPDIR=$tmp mmdebstrap --variant=essential --format=directory \
        --include=busybox-static,openssh-server \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tmp/deb" "$mirror" >"$tmp/mmdebstrap.log" 2>&1 ||
        { tail -n 30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    assemble "$tmp/deb" "$tmp/root"
    tar -C "$tmp/root" --numeric-owner -cf "$tmp/rootfs.tar" .
    docker import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["/usr/sbin/sshd", "-D", "-e"]' \
        --change "LABEL claw-lab.kind=portable" \
        --message "claw-lab BusyBox userland with OpenSSH" "$tmp/rootfs.tar" "$tag" >/dev/null
    say "built $tag in $((SECONDS - t0)) s ($(du -h "$tmp/rootfs.tar" | cut -f1) root file system)"
    rm -rf "$tmp"; trap - EXIT
}

lab_image_main "$@"
