#!/usr/bin/env bash
# Host image of the full-host lab (DESIGN.md section 8, issue 3): a Debian trixie server in a container, built
# on this machine from Debian packages (mmdebstrap -> docker import; nothing is pulled from a registry).
#
#   image.sh build     print the image tag claw-lab/host:<hash12>, building the image if it is missing
#   image.sh tag       print the tag only (no docker call, no build)
#   image.sh prune     remove claw-lab/host images whose tag is not the current recipe's
#
# The tag is the sha256 of the recipe: this whole script (package list, customisation and boot script are all
# in it), so any change to it builds a new image and an unchanged script reuses the cached one at once.
# Needs root and docker; installs mmdebstrap with apt-get if it is missing. The Debian mirror is read from
# this machine's apt sources (override: CLAW_LAB_DEBIAN_MIRROR=URL). Only this machine downloads; the image
# has NO apt sources (hosts get theirs from the provisioner/tests: the lab mirror).
#
# What is in it: systemd as PID 1 (systemd 257 boots here in "hybrid" mode on the machine's cgroup v1 +
# cgroup2 "unified" mount, given the container options lab.sh up-full uses), dbus, openssh-server, cron, sudo,
# nftables, iproute2, procps, curl, ca-certificates, gnupg, kmod, netbase. No Docker, no iptables: docker.io
# and its dependencies come from the lab mirror. Users: root (key only), claw (uid 1000, sudo NOPASSWD),
# clawpw (uid 1001, password `labpass`, sudo with password). No host keys: lab.sh installs one per host
# before the first boot (the boot script generates them only if none is there). No docs/man pages (dpkg
# path-exclude, also for packages installed later). apt installs Recommends (Debian's default).
# The entry point /usr/local/sbin/claw-lab-boot does what `--privileged` would have done (this machine's
# bounding set lacks CAP_SYS_RESOURCE, so docker's --privileged cannot start a container here: "unable to
# apply caps: operation not permitted"), turns docker's bind-mounted /etc/hosts, /etc/hostname and
# /etc/resolv.conf into plain files (resolv.conf: no DNS), deletes the default route and docker's
# embedded-DNS nat table, then execs systemd.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SUITE=trixie
REPO_NAME=claw-lab/host
PACKAGES=systemd-sysv,dbus,openssh-server,ca-certificates,curl,nftables,cron,sudo,iproute2,procps,gnupg,kmod,netbase
LOCK=/run/lock/claw-lab-host-image.lock
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "image.sh: $*" >&2; exit 1; }
say() { echo "image.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2; }

tag() {
    local h
    h=$(sha256sum <"$SELF")
    echo "$REPO_NAME:${h:0:12}"
}

have_image() { docker image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }

# shellcheck source=debian-mirror.sh
source "$HERE/debian-mirror.sh"

# /usr/local/sbin/claw-lab-boot: PID 1 until it execs systemd.
boot_script() {
    cat <<'EOF'
#!/bin/sh
# Entry point of a claw-lab full host (tests/lab/full/image.sh): do what `docker run --privileged` would
# have done (it cannot be used on this machine), make docker's bind-mounted /etc files plain files of the
# host (so they can be edited and replaced like on a real server), then exec systemd.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
# /sys and the cgroup hierarchies read-write (a Docker daemon inside creates cgroups)
mount -o remount,rw /sys 2>/dev/null || echo "claw-lab-boot: cannot remount /sys rw" >&2
mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
for d in /sys/fs/cgroup/*; do
    mountpoint -q "$d" && { mount -o remount,bind,rw "$d" 2>/dev/null || echo "claw-lab-boot: $d stays ro" >&2; }
done
# First boot: keep docker's generated hosts/hostname as plain files; resolv.conf: no DNS in the lab (names
# come from /etc/hosts). Later boots: drop docker's mounts, the host's own (possibly edited) files show.
first=
[ -e /var/lib/claw-lab/booted ] || first=1
for f in hosts hostname resolv.conf; do
    mountpoint -q "/etc/$f" || continue
    content=$(cat "/etc/$f")
    umount "/etc/$f" || { echo "claw-lab-boot: cannot unmount /etc/$f" >&2; continue; }
    [ -n "$first" ] || continue
    rm -f "/etc/$f"
    case $f in
    resolv.conf) printf '# claw-lab host: no DNS in the lab; names come from /etc/hosts\nnameserver 127.0.0.1\n' >/etc/resolv.conf ;;
    *) printf '%s\n' "$content" >"/etc/$f" ;;
    esac
    chmod 644 "/etc/$f"
done
# The lab has no way out: no default route (docker's --internal network would drop such packets anyway).
ip route del default 2>/dev/null || true
# A fresh server has an empty firewall: drop the nat rules docker adds for its embedded DNS (127.0.0.11),
# which the hosts do not use (resolv.conf above).
nft delete table ip nat 2>/dev/null || true
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
mkdir -p /var/lib/claw-lab && : >/var/lib/claw-lab/booted
exec /sbin/init "$@"
EOF
}

# Runs in the chroot (mmdebstrap customize hook).
customize_script() {
    cat <<'EOF'
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
chmod 755 /usr/local/sbin/claw-lab-boot
# users: root key-only ('*' = no password but not locked), claw sudo NOPASSWD, clawpw sudo with password
usermod --password '*' root
useradd --uid 1000 --create-home --shell /bin/bash --password '*' --comment 'lab user, sudo NOPASSWD' claw
useradd --uid 1001 --create-home --shell /bin/bash --comment 'lab user, sudo with password' clawpw
echo 'clawpw:labpass' | chpasswd
cat >/etc/sudoers.d/claw-lab <<'X'
# claw-lab host (tests/lab/full/image.sh)
claw   ALL=(ALL:ALL) NOPASSWD: ALL
clawpw ALL=(ALL:ALL) ALL
X
chmod 0440 /etc/sudoers.d/claw-lab
visudo -c -q
cp -a /etc/skel/. /root/
for u in root claw clawpw; do
    home=$(getent passwd "$u" | cut -d: -f6)
    install -d -m 0700 -o "$u" -g "$u" "$home/.ssh"
    install -m 0600 -o "$u" -g "$u" /dev/null "$home/.ssh/authorized_keys"
done
# sshd: like the light lab (VERBOSE log of every connection, no DNS); host keys come per host from lab.sh
cat >/etc/ssh/sshd_config.d/claw-lab.conf <<'X'
# claw-lab host (tests/lab/full/image.sh)
LogLevel VERBOSE
UseDNS no
PermitRootLogin prohibit-password
X
rm -f /etc/ssh/ssh_host_*
# systemd in a container: no kernel modules to load, no consoles, no firmware/udev settling
systemctl mask systemd-modules-load.service getty@tty1.service console-getty.service \
    systemd-udev-trigger.service systemd-udevd.service systemd-firstboot.service >/dev/null 2>&1 || true
systemctl enable ssh.service cron.service >/dev/null
# journald: keep logs small
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nSystemMaxUse=32M\nRuntimeMaxUse=16M\n' >/etc/systemd/journald.conf.d/claw-lab.conf
# no apt sources at all: hosts get the lab mirror from the provisioner
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log /var/log/apt/*
: >/etc/machine-id
EOF
}

build() {
    local tag=$1 mirror tmp t0=$SECONDS
    if ! command -v mmdebstrap >/dev/null; then
        say "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2; } ||
            die "apt-get install mmdebstrap failed"
    fi
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /tmp/claw-lab-host.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    boot_script >"$tmp/claw-lab-boot"
    customize_script >"$tmp/customize.sh"
    say "building $tag from $mirror ($SUITE) ..."
    TMPDIR=$tmp mmdebstrap --variant=apt --format=tar --include="$PACKAGES" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook="mkdir -p \"\$1/usr/local/sbin\" && cp '$tmp/claw-lab-boot' \"\$1/usr/local/sbin/claw-lab-boot\"" \
        --customize-hook="chroot \"\$1\" sh <'$tmp/customize.sh'" \
        "$SUITE" "$tmp/rootfs.tar" "$mirror" >"$tmp/mmdebstrap.log" 2>&1 ||
        { tail -n 30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    say "root file system built after $((SECONDS - t0)) s ($(du -h "$tmp/rootfs.tar" | cut -f1))"
    docker import \
        --change 'CMD ["/usr/local/sbin/claw-lab-boot"]' \
        --change 'ENV container=docker' \
        --change 'EXPOSE 22' \
        --change "LABEL claw-lab.kind=host claw-lab.suite=$SUITE" \
        --message "claw-lab full host ($SUITE)" "$tmp/rootfs.tar" "$tag" >/dev/null
    say "built $tag in $((SECONDS - t0)) s"
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

prune() { # images still used by a container (a running lab) are kept
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
