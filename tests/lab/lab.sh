#!/usr/bin/env bash
# Test lab for claw-provision (DESIGN.md section 8). Light hosts (`up`): N network namespaces, each with its
# own OpenSSH sshd, private /etc and /var (overlays on the machine's) and private /run /tmp /root /home /opt
# /srv. Full hosts (`up-full`): docker containers running systemd, sshd and (once installed) Docker, with an
# apt mirror and a git server. See tests/lab/README.md. Needs root. Never changes the machine's /etc, /var, ...
#
#   lab.sh deps                           install the packages the lab needs (apt), if missing
#   lab.sh up N            [--name LAB] [--delay MS]
#                                         start hosts h1..hN (tears down an existing lab of that name first);
#                                         --delay: MS ms one-way latency to every host (no netem on this
#                                         kernel: a TCP proxy on 127.0.0.1, tests/lab/delay-proxy.py; the
#                                         inventory, ssh_config and known_hosts then point at it)
#   lab.sh up-full N       [--name LAB]   full hosts h1..hN: docker containers (Debian trixie, systemd, sshd,
#                                         Docker can run inside) + apt mirror + git server; see README.md
#   lab.sh down            [--name LAB]   remove the lab, light or full (idempotent; also after a failed up)
#   lab.sh stop HOST       [--name LAB]   kill the host's sshd and every process of the host (disk state kept)
#   lab.sh start HOST      [--name LAB]   start the host's sshd again
#   lab.sh rekey HOST      [--name LAB]   new host key + restart sshd; known_hosts is NOT updated
#   lab.sh link HOST down|up [--name LAB] take the host's link down / up (connects then time out)
#   lab.sh exec HOST       [--name LAB] -- CMD...   run CMD as root inside the host (net, mount, uts namespaces;
#                                                   full lab: docker exec; HOST may also be mirror or git)
#   lab.sh ssh HOST        [--name LAB] -- CMD...   ssh -F target/LAB/ssh_config HOST CMD...
#   lab.sh status          [--name LAB]   one line per host: address, sshd running/stopped, link up/down
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
TARGET=$REPO/target
NET=10.213              # lab K uses 10.213.K.0/24: bridge .1, host hI at .(I+1)
MAX_HOSTS=250
GLOBAL_LOCK=/run/lock/claw-lab.lock   # subnet allocation is machine-wide (several checkouts may run labs)
SSHD=/usr/sbin/sshd
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "lab.sh: $*" >&2; exit 1; }
T0=${EPOCHREALTIME/[.,]/}
phase() { # LAB_TIMING=1 prints how long each step of `up`/`down` took
    [ -n "${LAB_TIMING:-}" ] || return 0
    local us=$((${EPOCHREALTIME/[.,]/} - T0))
    printf 'lab.sh: %d.%03ds %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2
}
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------- args
cmd=${1:-}; [ $# -gt 0 ] && shift
LAB=lab
DELAY=0
args=() rest=()
while [ $# -gt 0 ]; do
    case $1 in
    --name) [ $# -ge 2 ] || usage; LAB=$2; shift 2 ;;
    --name=*) LAB=${1#--name=}; shift ;;
    --delay) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage; DELAY=$2; shift 2 ;;
    --) shift; rest=("$@"); break ;;
    -h|--help) usage ;;
    *) args+=("$1"); shift ;;
    esac
done
[[ $LAB =~ ^[a-z0-9-]{1,20}$ ]] || die "bad lab name '$LAB' (want [a-z0-9-]{1,20})"
LD=$TARGET/$LAB
LOCKDIR=$TARGET/.lab-locks

[ "$(id -u)" = 0 ] || die "must run as root"

# --------------------------------------------------------------------------------------------- utils
lock_lab() { # serialise commands on one lab (fd 9; closed for every daemon we start)
    mkdir -p "$LOCKDIR"
    exec 9>"$LOCKDIR/$LAB.lock"
    flock 9
}

ensure_deps() {
    local -A need=()
    [ -x $SSHD ] || need[openssh-server]=1
    [ -x /usr/lib/openssh/sftp-server ] || need[openssh-sftp-server]=1
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need[openssh-client]=1
    command -v sudo >/dev/null && command -v visudo >/dev/null || need[sudo]=1
    command -v ip >/dev/null || need[iproute2]=1
    local c
    for c in nsenter unshare setsid flock findmnt; do command -v $c >/dev/null || need[util-linux]=1; done
    for c in mount umount; do command -v $c >/dev/null || need[mount]=1; done
    command -v ps >/dev/null || need[procps]=1
    command -v openssl >/dev/null || need[openssl]=1     # the lab's TLS certificates
    command -v mmdebstrap >/dev/null || need[mmdebstrap]=1   # full-host lab images are built from Debian packages
    command -v crontab >/dev/null || need[cron]=1          # hosts share the machine's /usr: crontab for cron tests
    command -v logrotate >/dev/null || need[logrotate]=1   # the claw-ai logrotate entry is run on light hosts
    for c in useradd usermod chpasswd; do command -v $c >/dev/null || need[passwd]=1; done
    [ ${#need[@]} -eq 0 ] && return 0
    local pkgs=("${!need[@]}") made_policy=
    echo "lab.sh: installing ${pkgs[*]}" >&2
    # Never let a package start the machine's own sshd as a service.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; } || rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || die "apt-get install ${pkgs[*]} failed"
}

alive() { # PID: true if the process exists and has not exited (a zombie has exited, only not been reaped yet)
    local line
    { read -r line </proc/"$1"/stat; } 2>/dev/null || return 1
    line=${line##*) }                  # state is the field after "(comm) "
    case ${line:0:1} in Z|X|x) return 1 ;; esac
    return 0
}

kill_wait() { # PIDS...: SIGKILL them and wait until each is gone or a zombie (exited, not yet reaped)
    [ $# -gt 0 ] || return 0
    kill -KILL "$@" 2>/dev/null || true
    local t p left
    for ((t = 0; t < 1000; t++)); do
        left=()
        for p; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        set -- "${left[@]}"
        sleep 0.01
    done
    die "processes still alive after SIGKILL: $*"
}

netns_pids() { # NETNS...: print "PID NETNS" for every live process inside those network namespaces
    [ $# -gt 0 ] || return 0
    local -A ino2ns=()
    local ns ino f
    while read -r f ino; do
        ino2ns[$ino]=${f#/run/netns/}
    done < <(printf '/run/netns/%s\n' "$@" | xargs -d '\n' stat -L -c '%n %i' 2>/dev/null || true)
    [ ${#ino2ns[@]} -gt 0 ] || return 0
    # zombies have no ns/net any more, so they are not listed
    stat -L -c '%n %i' /proc/[0-9]*/ns/net 2>/dev/null | while read -r f ino; do
        ns=${ino2ns[$ino]:-}
        [ -n "$ns" ] || continue
        f=${f#/proc/}
        echo "${f%%/*} $ns"
    done || true
}

# kill every process in the given netns (except the pids in $keep), repeat until none is left
kill_netns_procs() { # KEEP_PIDS_SPACE_SEPARATED NETNS...
    local keep=" $1 " round pids p
    shift
    for ((round = 0; round < 20; round++)); do
        pids=()
        while read -r p _; do
            [[ $keep == *" $p "* ]] || pids+=("$p")
        done < <(netns_pids "$@")
        [ ${#pids[@]} -eq 0 ] && return 0
        kill_wait "${pids[@]}"
    done
    die "processes keep appearing in $*"
}

# ------------------------------------------------------------------------------------ lab geometry
lab_index() { # print K of this lab (from the lab dir, else from a bridge whose alias names this lab dir)
    if [ -s "$LD/index" ]; then cat "$LD/index"; return 0; fi
    local f a
    for f in /sys/class/net/clawbr*/ifalias; do
        [ -e "$f" ] || continue
        read -r a <"$f" || true
        if [ "$a" = "claw-lab $LD" ]; then f=${f%/ifalias}; echo "${f##*/clawbr}"; return 0; fi
    done
    return 1
}
hostnum() { [[ $1 =~ ^h([0-9]+)$ ]] || die "bad host name '$1' (want hN)"; echo "${BASH_REMATCH[1]}"; }
addr_of() { echo "$NET.$K.$(($1 + 1))"; }          # host number -> address
ns_of() { echo "claw-$K-$LAB-h$1"; }                # host number -> netns name
veth_of() { echo "cl${K}h$1"; }                     # host number -> root-side veth (<= 9 chars)
bridge_of() { echo "clawbr$K"; }
# Hosts of one lab talk to each other across its bridge. Where the machine's iptables FORWARD
# policy drops (Docker sets DROP, and br_netfilter hands bridged frames to iptables), allow
# traffic from the bridge back to the same bridge only; nothing else is opened.
bridge_forward() { # add|del BRIDGE
    command -v iptables >/dev/null || return 0
    if [ "$1" = add ]; then
        iptables -C FORWARD -i "$2" -o "$2" -j ACCEPT 2>/dev/null || iptables -I FORWARD 1 -i "$2" -o "$2" -j ACCEPT 2>/dev/null || true
    else
        while iptables -D FORWARD -i "$2" -o "$2" -j ACCEPT 2>/dev/null; do :; done
    fi
}
mac_of() { printf '02:00:0a:d5:%02x:%02x' "$K" "$1"; }  # last byte: 1 = bridge, I+1 = host hI
in_netns() { [ /proc/"$1"/ns/net -ef "/run/netns/$NS" ]; }   # PID: is it inside host $NS?

need_lab() {
    K=$(lab_index) || die "no lab '$LAB' (run: lab.sh up N --name $LAB)"
    [ -s "$LD/hosts.count" ] || die "lab '$LAB' is incomplete; run lab.sh down/up"
}
need_host() { # HOST -> sets I H NS
    I=$(hostnum "$1")
    H=$LD/hosts/h$I
    NS=$(ns_of "$I")
    [ -d "$H" ] && [ -e "/run/netns/$NS" ] || die "lab '$LAB' has no host $1"
}
# The pids are checked to live in the host's netns, so a recycled pid is never mistaken for them.
anchor_pid() { # -> sets APID to the pid of the host's anchor (holds its mount + uts namespaces), or fails
    APID=
    { read -r APID <"$H/anchor.pid"; } 2>/dev/null || return 1
    [[ $APID =~ ^[0-9]+$ ]] && alive "$APID" && in_netns "$APID"
}
sshd_pid() { # -> sets SPID to the pid of the host's sshd listener, or fails
    SPID=
    { read -r SPID <"$H/sshd.pid"; } 2>/dev/null || return 1
    [[ $SPID =~ ^[0-9]+$ ]] && alive "$SPID" && in_netns "$SPID"
}

# --------------------------------------------------------------------------------------------- down
teardown() { # remove every trace of lab $LAB (caller holds the lab lock)
    if [ -f "$LD/delay.pid" ]; then kill "$(cat "$LD/delay.pid")" 2>/dev/null || true; rm -f "$LD/delay.pid"; fi
    # a full lab's docker objects (`down` always looks, also after a failed up-full or a lost lab dir)
    if is_full || [ "$cmd" = down ] || [ "$cmd" = up-full ]; then teardown_full; fi
    local ks=() k
    k=$(lab_index 2>/dev/null) && ks+=("$k")
    # a bridge may also name this lab dir even if the index file says otherwise (crash mid-up)
    local f a
    for f in /sys/class/net/clawbr*/ifalias; do
        [ -e "$f" ] || continue
        read -r a <"$f" || true
        if [ "$a" = "claw-lab $LD" ]; then f=${f%/ifalias}; k=${f##*/clawbr}; [[ " ${ks[*]} " == *" $k "* ]] || ks+=("$k"); fi
    done
    for K in "${ks[@]}"; do
        local nss=() n
        while read -r n _; do
            [[ $n =~ ^claw-$K-$LAB-h[0-9]+$ ]] && nss+=("$n")
        done < <(ip netns list 2>/dev/null)
        kill_netns_procs "" "${nss[@]}"
        phase "down: processes of ${#nss[@]} hosts gone"
        local batch="" ours=
        for n in "${nss[@]}"; do batch+="netns del $n"$'\n'; done
        # bridge clawbrK and veths clKh*: only if the bridge is ours (or already gone)
        a=
        { read -r a <"/sys/class/net/$(bridge_of)/ifalias"; } 2>/dev/null || true
        if [ ! -e "/sys/class/net/$(bridge_of)" ] || [ "$a" = "claw-lab $LD" ]; then ours=1; fi
        if [ -n "$ours" ]; then
            while read -r n; do
                batch+="link del $n"$'\n'
            done < <(ip -o link show type veth 2>/dev/null | sed -n "s/^[0-9]*: \(cl${K}h[0-9]*\)@.*/\1/p")
        fi
        [ -n "$batch" ] && { printf '%s' "$batch" | ip -force -batch - 2>/dev/null || true; }
        [ -n "$ours" ] && { bridge_forward del "$(bridge_of)"; ip link del "$(bridge_of)" 2>/dev/null || true; }
        phase "down: network deleted"
    done
    # `ip netns add` made /run/netns a mount point; drop it again once no namespace at all is left
    # (under the machine-wide lock, which `up` also holds while it adds namespaces).
    mkdir -p "$(dirname "$GLOBAL_LOCK")"
    exec 8>"$GLOBAL_LOCK"
    flock 8
    if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ] && findmnt -rn /run/netns >/dev/null; then
        umount /run/netns 2>/dev/null || true
    fi
    exec 8>&-
    phase "down: /run/netns checked"
    # Mounts live only in the hosts' private mount namespaces, which died with their processes; but be
    # thorough in case something was mounted in the root namespace by hand.
    if [ -d "$LD" ]; then
        local m
        findmnt -rn -o TARGET | awk -v d="$LD" 'index($0, d "/") == 1 || $0 == d' | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        # Deleting ~60 files per host takes seconds on a busy disk: move the dir out of the way (atomic,
        # so the lab is gone at once and `up` can start afresh) and delete it in the background.
        mv "$LD" "$TARGET/.trash-$LAB.${EPOCHREALTIME/[.,]/}"
    fi
    local t
    for t in "$TARGET/.trash-$LAB".*; do
        [ -d "$t" ] || continue
        setsid -f nice -n 10 rm -rf --one-file-system "$t" </dev/null >/dev/null 2>&1 8>&- 9>&-
    done
}

cmd_down() {
    lock_lab
    teardown
    echo "lab $LAB: down"
}

# ----------------------------------------------------------------------------------------------- up
alloc_index() { # choose a free K (machine-wide), create the bridge, record K in the lab dir
    mkdir -p "$(dirname "$GLOBAL_LOCK")"
    exec 8>"$GLOBAL_LOCK"
    flock 8
    local used k
    # third octets of 10.213.x.y already used by any address or route on the machine
    used=" $({ ip -4 -o addr show | awk '{print $4}'; ip -4 route show table all | awk '{print $1}'; } 2>/dev/null |
        awk -F. -v a="${NET%%.*}" -v b="${NET#*.}" '$1 == a && $2 == b {print $3}' | tr '\n' ' ') "
    used+=" $(cat "$TARGET"/*/index 2>/dev/null | tr "\n" " " || true) "
    for ((k = 1; k <= 254; k++)); do
        [[ $used == *" $k "* ]] && continue
        [ -e /sys/class/net/clawbr$k ] && continue
        K=$k
        echo "$K" >"$LD/index"
        local br; br=$(bridge_of)
        ip link add "$br" address "$(mac_of 1)" type bridge
        ip link set "$br" alias "claw-lab $LD"
        ip addr add "$NET.$K.1/24" dev "$br"
        ip link set "$br" up
        bridge_forward add "$br"
        exec 8>&-
        return 0
    done
    exec 8>&-
    die "no free subnet $NET.K.0/24 (K = 1..254)"
}

ssh_host_block() { # NAME ADDRESS USER: a `Host` block of target/LAB/ssh_config (plain OpenSSH, strict keys)
    printf '\nHost %s\n  HostName %s\n  Port 22\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n' "$1" "$2" "$3" "$LD/id_ed25519"
    printf '  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n' "$LD/known_hosts"
    printf '  UpdateHostKeys no\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n'
}

gen_tls() { # N ADDR_FN: a lab CA and one server certificate for every host (target/LAB/tls/)
    local n=$1 addr_fn=$2 i san="DNS:claw-ai.lab,DNS:localhost,IP:127.0.0.1" T=$LD/tls
    for ((i = 1; i <= n; i++)); do san+=",IP:$($addr_fn "$i")"; done
    mkdir -p "$T"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=claw lab CA $LAB" -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=claw-ai.lab" \
        -keyout "$T/privkey.pem" -out "$T/server.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" >"$T/ext.cnf"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
        -days 825 -extfile "$T/ext.cnf" -out "$T/server.pem" 2>/dev/null
    cat "$T/server.pem" "$T/ca.pem" >"$T/fullchain.pem"
    chmod 0600 "$T/ca.key" "$T/privkey.pem"
}

write_inventory() { # N ADDR_FN: target/LAB/inventory.toml (light and full labs have the same shape)
    local n=$1 addr_fn=$2 i inv
    gen_tls "$n" "$addr_fn"
    inv="# generated by tests/lab/lab.sh ($cmd) for lab $LAB
playbook = \"../../playbooks/demo.toml\"

[defaults]
user = \"claw\"
port = 22
identity_file = \"id_ed25519\"
known_hosts = \"known_hosts\"
host_key_policy = \"strict\"
connect_timeout = 10
become = true
# the lab's TLS certificate (CA, fullchain.pem, privkey.pem) for playbooks/claw-ai.toml
vars = { tls_dir = \"$LD/tls\", sshd_port = 22 }

[groups.lab]
vars = { }

# every lab host runs the whole claw-ai stack and is one of nginx's backends (playbooks/claw-ai.toml)
[groups.backend]
"
    for ((i = 1; i <= n; i++)); do
        inv+="
[hosts.h$i]
address = \"$($addr_fn "$i")\"
groups = [\"lab\", \"backend\"]
"
    done
    printf '%s' "$inv" >"$LD/inventory.toml"
}

gen_client_keys() {
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB" -f "$LD/id_ed25519" &
    ssh-keygen -q -t ecdsa -b 256 -N '' -C "claw-lab-$LAB-ecdsa" -f "$LD/id_ecdsa" &
    ssh-keygen -q -t rsa -b 3072 -N '' -C "claw-lab-$LAB-rsa" -f "$LD/id_rsa" &
    ssh-keygen -q -t ed25519 -N labphrase -C "claw-lab-$LAB-enc" -f "$LD/id_ed25519_enc" &
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB-other (authorized nowhere)" -f "$LD/id_other" &
    local p rc=0
    for p in $(jobs -p); do wait "$p" || rc=1; done
    return $rc
}

write_fstab() { # DIR REL: the mounts hostinit.sh makes for a host (REL = DIR relative to the lab dir)
    local S=/proc/self/fd/8/$2
    printf '%s\n' \
        "# generated by tests/lab/lab.sh; mounted by hostinit.sh inside the host's private mount namespace" \
        "overlay /etc overlay lowerdir=/etc,upperdir=$S/etc.upper,workdir=$S/etc.work 0 0" \
        "overlay /var overlay lowerdir=/var,upperdir=$S/var.upper,workdir=$S/var.work 0 0" \
        "$S/run /run none bind 0 0" \
        "$S/tmp /tmp none bind 0 0" \
        "$S/root /root none bind 0 0" \
        "$S/home /home none bind 0 0" \
        "$S/opt /opt none bind 0 0" \
        "$S/srv /srv none bind 0 0" \
        "claw-lab-shm /dev/shm tmpfs mode=1777,nosuid,nodev,size=64m 0 0" >"$1/fstab"
}

build_template() { # the users, sudoers, authorized_keys etc. every host starts with (copied per host)
    local T=$LD/template
    mkdir -p "$T"/{etc.upper,etc.work,var.upper,var.work,run/sshd,run/lock,tmp,root,home,opt,srv}
    chmod 0755 "$T"/{run,run/sshd,home,opt,srv}
    chmod 1777 "$T"/{tmp,run/lock}
    chmod 0700 "$T/root"
    write_fstab "$T" template
    unshare --mount --propagation private -- /bin/bash "$HERE/hostinit.sh" template "$LD" \
        </dev/null >"$LD/template.log" 2>&1 9>&- ||
        { cat "$LD/template.log" >&2; die "building the host template failed"; }
    rm -f "$T/etc.upper/resolv.conf"
    printf '# lab host: no DNS (no default route); names come from /etc/hosts\nnameserver 127.0.0.1\n' \
        >"$T/etc.upper/resolv.conf"
}

write_sshd_config() { # I H
    local addr; addr=$(addr_of "$1")
    cat >"$2/sshd_config" <<EOF
# generated by tests/lab/lab.sh: lab $LAB, host h$1
ListenAddress $addr
Port 22
HostKey $2/ssh_host_ed25519_key
PidFile $2/sshd.pid
LogLevel VERBOSE
UseDNS no
UsePAM yes
PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

start_anchor() { # needs I H NS; sets APID
    APID=$(setsid -f nsenter --net="/run/netns/$NS" -- \
        unshare --mount --uts --propagation private -- /bin/bash "$HERE/hostinit.sh" anchor "$LD" "h$I" \
        </dev/null 2>>"$H/host.log" 8>&- 9>&-) || true
    [[ $APID =~ ^[0-9]+$ ]] && alive "$APID" || { tail -n 20 "$H/host.log" >&2; die "h$I: could not set up the host's namespaces"; }
    echo "$APID" >"$H/anchor.pid"
    in_netns "$APID" || die "h$I: anchor is not in $NS"
}

start_sshd() { # needs I H NS; anchor must run
    local spid t p
    anchor_pid || die "h$I: host is not running (its namespaces are gone); run lab.sh up again"
    if sshd_pid; then return 0; fi
    rm -f "$H/sshd.pid"
    # The sh prints its pid (= sshd's pid after exec) and closes stdout so that $(...) returns.
    spid=$(setsid -f nsenter -t "$APID" --net --mount --uts -- /bin/sh -c \
        'echo $$; exec "$0" -D -f "$1" -E "$2" </dev/null >>"$3" 2>&1' \
        "$SSHD" "$H/sshd_config" "$H/sshd.log" "$H/host.log" </dev/null 2>>"$H/host.log" 8>&- 9>&-) || true
    [[ $spid =~ ^[0-9]+$ ]] || die "h$I: could not start sshd (see $H/host.log)"
    # sshd writes its PidFile after binding the listen socket: that is our readiness signal.
    for ((t = 0; t < 1000; t++)); do
        p=
        { read -r p <"$H/sshd.pid"; } 2>/dev/null || true
        [ "$p" = "$spid" ] && return 0
        alive "$spid" || break
        sleep 0.01
    done
    tail -n 20 "$H/sshd.log" "$H/host.log" >&2 || true
    die "h$I: sshd did not start"
}

stop_host_procs() { # needs I H NS: kill sshd and every other process of the host except the anchor
    anchor_pid || true
    kill_netns_procs "$APID" "$NS"
    rm -f "$H/sshd.pid"
}

host_up() { # I: prepare the host dir, start namespaces and sshd (runs in parallel for all hosts)
    I=$1
    H=$LD/hosts/h$I
    NS=$(ns_of "$I")
    local addr gwmac
    addr=$(addr_of "$I")
    printf -v gwmac '02:00:0a:d5:%02x:01' "$K"
    cp -a "$LD/template" "$H"
    printf '%s\n' "h$I" >"$H/etc.upper/hostname"
    printf '%s\n' "# lab $LAB, host h$I (private /etc/hosts; no DNS in the lab)" "127.0.0.1	localhost" \
        "::1	localhost ip6-localhost ip6-loopback" "$addr	h$I" "$NET.$K.1	lab-gateway" >"$H/etc.upper/hosts"
    write_fstab "$H" "hosts/h$I"
    ssh-keygen -q -t ed25519 -N '' -C "root@h$I" -f "$H/ssh_host_ed25519_key"
    write_sshd_config "$I" "$H"
    printf '%s\n' "link set lo up" "addr add $addr/24 dev eth0" "link set eth0 up" \
        "neigh replace $NET.$K.1 lladdr $gwmac dev eth0 nud permanent" |
        nsenter --net="/run/netns/$NS" -- ip -batch -    # (`ip -n` would also copy the mount namespace)
    start_anchor
    start_sshd
    : >"$H/.up-ok"
}

cmd_up() {
    [ ${#args[@]} -eq 1 ] && [[ ${args[0]} =~ ^[0-9]+$ ]] || usage
    local n=${args[0]} i
    { [ "$n" -ge 1 ] && [ "$n" -le $MAX_HOSTS ]; } || die "N must be 1..$MAX_HOSTS"
    case $REPO/ in
    /etc/*|/var/*) die "the repository must not live under /etc or /var (they are the lower layers of the hosts' overlays)" ;;
    esac
    ensure_deps
    lock_lab
    teardown
    phase "old lab removed"
    mkdir -p "$LD/hosts"
    alloc_index
    local br; br=$(bridge_of)

    gen_client_keys &
    local keys_job=$!

    # network: all netns + veths + bridge ports + permanent neighbour entries in one ip batch
    local batch=""
    for ((i = 1; i <= n; i++)); do
        batch+="netns add $(ns_of $i)
link add $(veth_of $i) type veth peer name eth0 address $(mac_of $((i + 1))) netns $(ns_of $i)
link set $(veth_of $i) master $br up
neigh replace $(addr_of $i) lladdr $(mac_of $((i + 1))) dev $br nud permanent
"
    done
    exec 8>"$GLOBAL_LOCK"
    flock 8
    printf '%s' "$batch" | ip -batch - || die "creating the network failed"
    exec 8>&-

    phase "network created"
    wait "$keys_job" || die "client key generation failed"
    phase "client keys generated"
    build_template
    phase "host template built"

    # per-host work in parallel (bounded)
    local par=${LAB_JOBS:-$(( $(nproc) * 8 ))} running=0
    for ((i = 1; i <= n; i++)); do
        ( host_up "$i" ) 2>>"$LD/up.log" &
        running=$((running + 1))
        if [ $running -ge $par ]; then wait -n || true; running=$((running - 1)); fi
    done
    wait || true
    phase "hosts started"
    local failed=()
    for ((i = 1; i <= n; i++)); do [ -e "$LD/hosts/h$i/.up-ok" ] || failed+=("h$i"); done
    if [ ${#failed[@]} -gt 0 ]; then
        tail -n 30 "$LD/up.log" >&2 || true
        die "lab $LAB: hosts failed to come up: ${failed[*]} (clean up with: lab.sh down --name $LAB)"
    fi
    rm -f "$LD"/hosts/h*/.up-ok

    write_client_files "$n"
    [ "$DELAY" = 0 ] || add_delay "$n"
    echo "$n" >"$LD/hosts.count"
    local lat=""
    [ "$DELAY" = 0 ] || lat=", $DELAY ms one-way delay"
    echo "lab $LAB: $n hosts up$lat (inventory: target/$LAB/inventory.toml)"
}

add_delay() { # N: every host through the delay proxy (127.0.0.1:PORT), client files rewritten
    local n=$1 i targets=() ports
    command -v python3 >/dev/null || die "--delay needs python3"
    for ((i = 1; i <= n; i++)); do targets+=("$(addr_of $i):22"); done
    setsid python3 "$HERE/delay-proxy.py" --many "$DELAY" "${targets[@]}" >"$LD/delay.ports" 2>>"$LD/up.log" </dev/null 8>&- 9>&- &
    echo $! >"$LD/delay.pid"
    for ((i = 0; i < 300; i++)); do
        [ "$(wc -l <"$LD/delay.ports")" -ge "$n" ] && break
        sleep 0.1
    done
    mapfile -t ports <"$LD/delay.ports"
    [ "${#ports[@]}" -eq "$n" ] || die "the delay proxy did not start (see $LD/up.log)"
    python3 - "$LD" "$DELAY" "${ports[@]}" <<'PY'
import json, re, sys
ld, delay, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
lab = json.load(open(f"{ld}/lab.json"))
kh = open(f"{ld}/known_hosts").read()
inv = open(f"{ld}/inventory.toml").read()
cfg = open(f"{ld}/ssh_config").read()
extra = []
for h, port in zip(lab["hosts"], ports):
    addr = h["address"]
    key = next(l.split(" ", 1)[1] for l in kh.splitlines() if l.startswith(addr + " "))
    extra.append(f"[127.0.0.1]:{port} {key}")
    inv = inv.replace(f'address = "{addr}"\n', f'address = "127.0.0.1"\nport = {port}\n', 1)
    cfg = re.sub(rf"(\n  HostName ){re.escape(addr)}\n  Port 22\n", rf"\g<1>127.0.0.1\n  Port {port}\n", cfg, 1)
    h["proxy_port"] = int(port)
lab["delay_ms"] = int(delay)
open(f"{ld}/known_hosts", "a").write("\n".join(extra) + "\n")
open(f"{ld}/inventory.toml", "w").write(inv)
open(f"{ld}/ssh_config", "w").write(cfg)
json.dump(lab, open(f"{ld}/lab.json", "w"), indent=1)
PY
}

write_client_files() { # N
    local n=$1 i addr kh="" inv ssh_cfg="" json="" sep=""
    for ((i = 1; i <= n; i++)); do
        addr=$(addr_of $i)
        local hk; read -r -a hk <"$LD/hosts/h$i/ssh_host_ed25519_key.pub"
        kh+="$addr ${hk[0]} ${hk[1]}"$'\n'
    done
    printf '%s' "$kh" >"$LD/known_hosts"

    write_inventory "$n" addr_of

    ssh_cfg="# generated by tests/lab/lab.sh for lab $LAB; use: ssh -F $LD/ssh_config h1
"
    for ((i = 1; i <= n; i++)); do
        ssh_cfg+=$(ssh_host_block "h$i" "$(addr_of $i)" claw)
    done
    printf '%s\n' "$ssh_cfg" >"$LD/ssh_config"

    json="{\"name\": \"$LAB\", \"subnet\": \"$NET.$K.0/24\", \"hosts\": ["
    for ((i = 1; i <= n; i++)); do
        local H=$LD/hosts/h$i
        json+="$sep
  {\"name\": \"h$i\", \"address\": \"$(addr_of $i)\", \"port\": 22, \"netns\": \"$(ns_of $i)\", \"sshd_log\": \"$H/sshd.log\", \"pid_file\": \"$H/sshd.pid\", \"root\": \"$H\"}"
        sep=,
    done
    json+="
]}"
    printf '%s\n' "$json" >"$LD/lab.json"
}

# ------------------------------------------------------------------------------------ host commands
one_host_arg() { [ ${#args[@]} -eq "$1" ] || usage; need_lab; need_host "${args[0]}"; }

cmd_stop() { one_host_arg 1; lock_lab; stop_host_procs; echo "lab $LAB: h$I stopped"; }
cmd_start() { one_host_arg 1; lock_lab; start_sshd; echo "lab $LAB: h$I started"; }
cmd_rekey() {
    one_host_arg 1
    lock_lab
    stop_host_procs
    rm -f "$H/ssh_host_ed25519_key" "$H/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "root@h$I (rekeyed)" -f "$H/ssh_host_ed25519_key"
    start_sshd
    echo "lab $LAB: h$I has a new host key (known_hosts unchanged)"
}
cmd_link() {
    one_host_arg 2
    case ${args[1]} in up|down) ;; *) usage ;; esac
    ip link set "$(veth_of "$I")" "${args[1]}"
    echo "lab $LAB: h$I link ${args[1]}"
}
cmd_exec() {
    [ ${#args[@]} -ge 1 ] || usage
    rest=("${args[@]:1}" "${rest[@]}") args=("${args[0]}")   # `--` is optional
    one_host_arg 1
    anchor_pid || die "h$I: host is not running"
    [ ${#rest[@]} -gt 0 ] || rest=(/bin/bash -l)
    exec nsenter -t "$APID" --net --mount --uts -- "${rest[@]}"
}
cmd_ssh() {
    [ ${#args[@]} -ge 1 ] || usage
    rest=("${args[@]:1}" "${rest[@]}") args=("${args[0]}")   # `--` is optional
    if is_full; then
        full_need_lab
        [[ ${args[0]} =~ ^(h[0-9]+|git)$ ]] || die "bad host name '${args[0]}' (want hN or git)"
    else
        need_lab
        hostnum "${args[0]}" >/dev/null
    fi
    exec ssh -F "$LD/ssh_config" "${args[0]}" "${rest[@]}"
}
cmd_status() {
    need_lab
    local n i st lk
    n=$(cat "$LD/hosts.count")
    echo "lab $LAB: subnet $NET.$K.0/24, $n hosts, dir $LD"
    for ((i = 1; i <= n; i++)); do
        H=$LD/hosts/h$i NS=$(ns_of $i) I=$i
        if sshd_pid; then st="sshd running (pid $SPID)"; elif anchor_pid; then st="sshd stopped"; else st="DOWN"; fi
        if ip link show "$(veth_of $i)" 2>/dev/null | grep -q '[<,]UP[,>]'; then lk="link up"; else lk="link down"; fi
        echo "h$i $(addr_of $i) $st, $lk"
    done
}

# ------------------------------------------------------------------------------------------ full lab
# Full hosts (DESIGN.md section 8): docker containers from tests/lab/full/image.sh (Debian trixie, systemd,
# sshd, room for a Docker daemon inside) on a per-lab --internal docker network 10.214.K.0/24, plus the lab's
# apt mirror (.250, tests/lab/full/mirror.sh) and git server (.251, tests/lab/full/stack.sh) when those
# scripts exist. Every docker object carries the labels claw-lab.dir=LABDIR and claw-lab.name=LAB, which is
# how `down` finds them (also after a failed or killed up-full). Names: claw-K-LAB-hN, claw-K-LAB-mirror,
# claw-K-LAB-git, network claw-K-LAB (bridge clawfbK), volumes claw-K-LAB-hN-docker.
FULL_NET=10.214
FULL_MAX_HOSTS=248                    # hI = .(I+1); .250 mirror, .251 git
FULL=$HERE/full
# `--privileged` cannot be used on this machine (its capability bounding set lacks CAP_SYS_RESOURCE, so runc
# fails with "unable to apply caps: operation not permitted"); these options give the rest of what it gives.
# The image's boot script then remounts /sys and the cgroup hierarchies read-write.
FULL_HOST_OPTS=(--cap-add ALL --cap-drop SYS_RESOURCE
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined
    --device-cgroup-rule 'a *:* rwm' --cgroupns private --stop-signal SIGRTMIN+3 --stop-timeout 5)

is_full() { [ "$(cat "$LD/kind" 2>/dev/null)" = full ]; }
docker_ok() { command -v docker >/dev/null && [ -S /var/run/docker.sock ]; }
full_addr() { echo "$FULL_NET.$K.$(($1 + 1))"; }
full_name() { echo "claw-$K-$LAB-$1"; }           # h3 / mirror / git -> container name

teardown_full() { # remove every docker object labelled with this lab dir (idempotent)
    local f="label=claw-lab.dir=$LD" ids
    if ! docker_ok || ! ids=$(docker ps -aq --filter "$f" 2>/dev/null); then
        # no docker here: fine for a light lab, an error for a full one
        is_full && die "lab $LAB is a full lab but the docker daemon is not reachable"
        return 0
    fi
    [ -z "$ids" ] || docker rm -f -v $ids >/dev/null || die "docker rm failed"
    ids=$(docker volume ls -q --filter "$f") || true
    [ -z "$ids" ] || docker volume rm -f $ids >/dev/null || die "docker volume rm failed"
    ids=$(docker network ls -q --filter "$f") || true
    [ -z "$ids" ] || docker network rm $ids >/dev/null || die "docker network rm failed"
    phase "down: full-lab containers, volumes, network removed"
}

full_alloc_index() { # choose a free K (machine-wide) and create the lab's docker network; sets K
    mkdir -p "$(dirname "$GLOBAL_LOCK")"
    exec 8>"$GLOBAL_LOCK"
    flock 8
    local used k
    used=" $({ ip -4 -o addr show | awk '{print $4}'; ip -4 route show table all | awk '{print $1}'
               docker network ls -q | xargs -r docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n'
             } 2>/dev/null | awk -F. -v a="${FULL_NET%%.*}" -v b="${FULL_NET#*.}" '$1 == a && $2 == b {print $3}' | tr '\n' ' ') "
    used+=" $(cat "$TARGET"/*/full.index 2>/dev/null | tr '\n' ' ' || true) "
    for ((k = 1; k <= 254; k++)); do
        [[ $used == *" $k "* ]] && continue
        [ -e "/sys/class/net/clawfb$k" ] && continue
        K=$k
        echo "$K" >"$LD/full.index"
        if docker network create --internal --driver bridge --subnet "$FULL_NET.$K.0/24" --gateway "$FULL_NET.$K.1" \
            -o com.docker.network.bridge.name="clawfb$K" --label "claw-lab.dir=$LD" --label "claw-lab.name=$LAB" \
            "claw-$K-$LAB" >/dev/null 2>>"$LD/up.log"; then
            exec 8>&-
            return 0
        fi
    done
    exec 8>&-
    die "no free subnet $FULL_NET.K.0/24 for a docker network (see $LD/up.log)"
}

full_wait_tcp() { # ADDR PORT SECONDS: until something accepts a TCP connection there
    local t end=$((SECONDS + $3))
    while ! timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

full_host_up() { # I IMAGE: create, provision and start host hI (runs in parallel for all hosts)
    local i=$1 image=$2 name addr H S
    name=$(full_name "h$i") addr=$(full_addr "$i") H=$LD/hosts/h$i S=$LD/hosts/h$i/stage
    mkdir -p "$H"
    cp -a "$LD/template" "$S"
    ssh-keygen -q -t ed25519 -N '' -C "root@h$i" -f "$H/ssh_host_ed25519_key"
    install -m 0600 "$H/ssh_host_ed25519_key" "$S/etc/ssh/ssh_host_ed25519_key"
    install -m 0644 "$H/ssh_host_ed25519_key.pub" "$S/etc/ssh/ssh_host_ed25519_key.pub"
    docker volume create --label "claw-lab.dir=$LD" --label "claw-lab.name=$LAB" "$name-docker" >/dev/null
    local a add=()
    for a in "${FULL_ADD_HOSTS[@]}"; do [ "${a%%:*}" = "h$i" ] || add+=(--add-host "$a"); done
    docker create --name "$name" --hostname "h$i" --network "claw-$K-$LAB" --ip "$addr" "${add[@]}" \
        --label "claw-lab.dir=$LD" --label "claw-lab.name=$LAB" --label "claw-lab.host=h$i" \
        "${FULL_HOST_OPTS[@]}" -v "$name-docker:/var/lib/docker" "$image" >/dev/null
    # host key and authorized_keys into the container's file system before its first boot
    tar -C "$S" --numeric-owner -cf - etc/ssh/ssh_host_ed25519_key etc/ssh/ssh_host_ed25519_key.pub \
        root/.ssh/authorized_keys home/claw/.ssh/authorized_keys home/clawpw/.ssh/authorized_keys |
        docker cp -a - "$name:/"
    rm -rf "$S"
    docker start "$name" >/dev/null
    full_wait_tcp "$addr" 22 60 || { docker logs --tail 30 "$name" >&2 || true; die "h$i: sshd did not come up"; }
    : >"$H/.up-ok"
}

full_template() { # authorized_keys for root, claw (uid 1000), clawpw (uid 1001), as they go into every host
    local T=$LD/template
    mkdir -p "$T/etc/ssh" "$T/root/.ssh" "$T/home/claw/.ssh" "$T/home/clawpw/.ssh"
    cat "$LD/id_ed25519.pub" >"$T/root/.ssh/authorized_keys"
    cp "$T/root/.ssh/authorized_keys" "$T/home/claw/.ssh/authorized_keys"
    cp "$T/root/.ssh/authorized_keys" "$T/home/clawpw/.ssh/authorized_keys"
    chmod 0600 "$T"/root/.ssh/authorized_keys "$T"/home/*/.ssh/authorized_keys
    chown 1000:1000 "$T/home/claw/.ssh/authorized_keys"
    chown 1001:1001 "$T/home/clawpw/.ssh/authorized_keys"
}

full_mirror_up() { # IMAGE PYPI_DIR: start the apt mirror at .250 (also serving PYPI_DIR read-only at /pypi, the
    # PyPI mirror of tests/lab/full/pypi.sh), wait until it serves the signed repository and the PyPI index
    local name addr=$FULL_NET.$K.250
    name=$(full_name mirror)
    docker run -d --name "$name" --hostname mirror --network "claw-$K-$LAB" --ip "$addr" \
        -v "$2:/srv/www/pypi:ro" \
        --label "claw-lab.dir=$LD" --label "claw-lab.name=$LAB" --label claw-lab.host=mirror "$1" >/dev/null
    bash "$FULL/mirror.sh" key "$LD/mirror.asc"
    local end=$((SECONDS + 30))
    until curl -sf -o /dev/null -m 2 "http://$addr/debian/dists/trixie/InRelease" &&
        curl -sf -o /dev/null -m 2 "http://$addr/pypi/simple/"; do
        [ $SECONDS -lt $end ] || { docker logs --tail 20 "$name" >&2 || true; die "mirror did not come up"; }
        sleep 0.1
    done
    : >"$LD/.mirror-ok"
}

full_git_up() { # IMAGE: start the git server at .251 with the lab's host key, wait for its sshd
    local name addr=$FULL_NET.$K.251
    name=$(full_name git)
    mkdir -p "$LD/git/stage/etc/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "root@git" -f "$LD/git/ssh_host_ed25519_key"
    install -m 0600 "$LD/git/ssh_host_ed25519_key" "$LD/git/stage/etc/ssh/ssh_host_ed25519_key"
    install -m 0644 "$LD/git/ssh_host_ed25519_key.pub" "$LD/git/stage/etc/ssh/ssh_host_ed25519_key.pub"
    docker create --name "$name" --hostname git --network "claw-$K-$LAB" --ip "$addr" \
        --label "claw-lab.dir=$LD" --label "claw-lab.name=$LAB" --label claw-lab.host=git \
        -e "AUTHORIZED_KEYS=$(cat "$LD/id_ed25519.pub" "$LD/id_deploy.pub")" "$1" >/dev/null
    tar -C "$LD/git/stage" --numeric-owner -cf - etc/ssh/ssh_host_ed25519_key etc/ssh/ssh_host_ed25519_key.pub |
        docker cp -a - "$name:/"
    rm -rf "$LD/git/stage"
    docker start "$name" >/dev/null
    full_wait_tcp "$addr" 22 30 || { docker logs --tail 20 "$name" >&2 || true; die "git server did not come up"; }
    : >"$LD/.git-ok"
}

full_image() { # LOGNAME SCRIPT ARGS...: print the tag an image script prints (it may build the image)
    local log=$LD/$1.log; shift
    bash "$@" 2>"$log" || { tail -n 30 "$log" >&2; die "$* failed (log: $log)"; }
}

cmd_up_full() {
    [ ${#args[@]} -eq 1 ] && [[ ${args[0]} =~ ^[0-9]+$ ]] || usage
    local n=${args[0]} i
    { [ "$n" -ge 1 ] && [ "$n" -le $FULL_MAX_HOSTS ]; } || die "N must be 1..$FULL_MAX_HOSTS"
    docker_ok && docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "docker daemon not reachable"
    command -v ssh-keygen >/dev/null && command -v ssh >/dev/null && command -v curl >/dev/null ||
        die "need ssh, ssh-keygen and curl on the machine (openssh-client, curl)"
    lock_lab
    teardown
    phase "old lab removed"
    mkdir -p "$LD/hosts"
    echo full >"$LD/kind"

    # images (cached; a cold build takes minutes) and client keys, in parallel
    local with_mirror='' with_git=''
    [ -f "$FULL/mirror.sh" ] && [ "${LAB_FULL_MIRROR:-1}" != 0 ] && with_mirror=1
    [ -f "$FULL/stack.sh" ] && [ "${LAB_FULL_GIT:-1}" != 0 ] && with_git=1
    full_image image.build "$FULL/image.sh" build >"$LD/host.image" &
    local jobs_=($!)
    [ -z "$with_mirror" ] || { full_image mirror.build "$FULL/mirror.sh" image >"$LD/mirror.image" & jobs_+=($!); }
    [ -z "$with_mirror" ] || { full_image pypi.build "$FULL/pypi.sh" build >"$LD/pypi.dir" & jobs_+=($!); }
    [ -z "$with_git" ] || { full_image git.build "$FULL/stack.sh" gitserver-image >"$LD/git.image" & jobs_+=($!); }
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB" -f "$LD/id_ed25519" &
    jobs_+=($!)
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB-other (authorized nowhere)" -f "$LD/id_other" &
    jobs_+=($!)
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB-deploy (authorized on the git server)" -f "$LD/id_deploy" &
    jobs_+=($!)
    local j rc=0
    for j in "${jobs_[@]}"; do wait "$j" || rc=1; done
    [ $rc = 0 ] || die "lab $LAB: images or keys failed (clean up with: lab.sh down --name $LAB)"
    local host_image mirror_image='' git_image=''
    host_image=$(cat "$LD/host.image")
    [ -z "$with_mirror" ] || mirror_image=$(cat "$LD/mirror.image")
    [ -z "$with_git" ] || git_image=$(cat "$LD/git.image")
    phase "images ready, client keys generated"

    full_alloc_index
    phase "network claw-$K-$LAB created"
    # every host's /etc/hosts names the mirror, the git server and all other hosts of the lab (no DNS)
    FULL_ADD_HOSTS=("mirror:$FULL_NET.$K.250" "git:$FULL_NET.$K.251")
    for ((i = 1; i <= n; i++)); do FULL_ADD_HOSTS+=("h$i:$(full_addr "$i")"); done
    full_template

    # hosts, mirror and git server in parallel (bounded)
    local par=${LAB_JOBS:-$(( $(nproc) * 4 ))} running=0
    [ -z "$mirror_image" ] || { ( full_mirror_up "$mirror_image" "$(cat "$LD/pypi.dir")" ) 2>>"$LD/up.log" & running=$((running + 1)); }
    [ -z "$git_image" ] || { ( full_git_up "$git_image" ) 2>>"$LD/up.log" & running=$((running + 1)); }
    for ((i = 1; i <= n; i++)); do
        ( full_host_up "$i" "$host_image" ) 2>>"$LD/up.log" &
        running=$((running + 1))
        if [ $running -ge $par ]; then wait -n || true; running=$((running - 1)); fi
    done
    wait || true
    phase "containers started, sshd listening"
    local failed=()
    for ((i = 1; i <= n; i++)); do [ -e "$LD/hosts/h$i/.up-ok" ] || failed+=("h$i"); done
    [ -z "$mirror_image" ] || [ -e "$LD/.mirror-ok" ] || failed+=(mirror)
    [ -z "$git_image" ] || [ -e "$LD/.git-ok" ] || failed+=(git)
    if [ ${#failed[@]} -gt 0 ]; then
        tail -n 30 "$LD/up.log" >&2 || true
        die "lab $LAB: failed to come up: ${failed[*]} (clean up with: lab.sh down --name $LAB)"
    fi
    rm -rf "$LD"/hosts/h*/.up-ok "$LD/.mirror-ok" "$LD/.git-ok" "$LD/template"

    full_write_client_files "$n" "$mirror_image" "$git_image"
    # every host answers a real login with strict host key checking
    for ((i = 1; i <= n; i++)); do
        ssh -F "$LD/ssh_config" "h$i" true </dev/null 2>>"$LD/up.log" &
    done
    rc=0
    for j in $(jobs -p); do wait "$j" || rc=1; done
    [ $rc = 0 ] || { tail -n 10 "$LD/up.log" >&2; die "lab $LAB: ssh login failed on some host (clean up with: lab.sh down --name $LAB)"; }
    phase "ssh logins checked"
    echo "$n" >"$LD/hosts.count"
    echo "lab $LAB: $n full hosts up on $FULL_NET.$K.0/24 (inventory: target/$LAB/inventory.toml)"
}

full_write_client_files() { # N MIRROR_IMAGE GIT_IMAGE
    local n=$1 i addr kh="" inv ssh_cfg json sep="" hk
    for ((i = 1; i <= n; i++)); do
        read -r -a hk <"$LD/hosts/h$i/ssh_host_ed25519_key.pub"
        kh+="$(full_addr "$i") ${hk[0]} ${hk[1]}"$'\n'
    done
    if [ -n "$3" ]; then
        read -r -a hk <"$LD/git/ssh_host_ed25519_key.pub"
        kh+="$FULL_NET.$K.251 ${hk[0]} ${hk[1]}"$'\n'
    fi
    printf '%s' "$kh" >"$LD/known_hosts"

    write_inventory "$n" full_addr

    ssh_cfg="# generated by tests/lab/lab.sh up-full for lab $LAB; use: ssh -F $LD/ssh_config h1
"
    local hosts=() h a u
    for ((i = 1; i <= n; i++)); do hosts+=("h$i $(full_addr "$i") claw"); done
    [ -z "$3" ] || hosts+=("git $FULL_NET.$K.251 git")
    for h in "${hosts[@]}"; do
        read -r h a u <<<"$h"
        ssh_cfg+=$(ssh_host_block "$h" "$a" "$u")
    done
    printf '%s\n' "$ssh_cfg" >"$LD/ssh_config"

    local mirror=null git=null pypi=null
    [ -z "$2" ] || pypi="{\"url\": \"http://$FULL_NET.$K.250/pypi/simple/\", \"trusted_host\": \"$FULL_NET.$K.250\", \"dir\": \"$(cat "$LD/pypi.dir")\"}"
    [ -z "$2" ] || mirror="{\"url\": \"http://$FULL_NET.$K.250/debian\", \"unsigned_url\": \"http://$FULL_NET.$K.250/unsigned\", \"key\": \"$LD/mirror.asc\", \"address\": \"$FULL_NET.$K.250\", \"container\": \"$(full_name mirror)\", \"image\": \"$2\"}"
    if [ -n "$3" ]; then
        read -r -a hk <"$LD/git/ssh_host_ed25519_key.pub"
        git="{\"address\": \"$FULL_NET.$K.251\", \"user\": \"git\", \"repo_path\": \"/srv/git/backend.git\", \"host_key\": \"${hk[0]} ${hk[1]}\", \"deploy_key\": \"$LD/id_deploy\", \"container\": \"$(full_name git)\", \"image\": \"$3\"}"
    fi
    json="{\"name\": \"$LAB\", \"kind\": \"full\", \"subnet\": \"$FULL_NET.$K.0/24\", \"network\": \"claw-$K-$LAB\", \"image\": \"$(cat "$LD/host.image")\",
 \"mirror\": $mirror,
 \"pypi\": $pypi,
 \"git\": $git,
 \"hosts\": ["
    for ((i = 1; i <= n; i++)); do
        json+="$sep
  {\"name\": \"h$i\", \"address\": \"$(full_addr "$i")\", \"port\": 22, \"container\": \"$(full_name "h$i")\", \"docker_volume\": \"$(full_name "h$i")-docker\"}"
        sep=,
    done
    json+="
]}"
    printf '%s\n' "$json" >"$LD/lab.json"
}

full_need_lab() {
    K=$(cat "$LD/full.index" 2>/dev/null) && [ -s "$LD/hosts.count" ] ||
        die "full lab '$LAB' is incomplete; run lab.sh down/up-full"
}
full_container_of() { # HOST (hN or mirror or git) -> container name
    [[ $1 =~ ^(h[0-9]+|mirror|git)$ ]] || die "bad host name '$1' (want hN, mirror or git)"
    local c; c=$(full_name "$1")
    docker inspect --format '{{.Id}}' "$c" >/dev/null 2>&1 || die "lab '$LAB' has no host $1"
    echo "$c"
}
cmd_full_exec() {
    [ ${#args[@]} -ge 1 ] || usage
    rest=("${args[@]:1}" "${rest[@]}") args=("${args[0]}")
    full_need_lab
    local c t=(); c=$(full_container_of "${args[0]}")
    [ -t 0 ] && [ -t 1 ] && t=(-t)
    [ ${#rest[@]} -gt 0 ] || rest=(/bin/bash -l)
    exec docker exec -i "${t[@]}" "$c" "${rest[@]}"
}
cmd_full_status() {
    full_need_lab
    echo "lab $LAB (full): subnet $FULL_NET.$K.0/24, $(cat "$LD/hosts.count") hosts, dir $LD"
    docker ps -a --filter "label=claw-lab.dir=$LD" --format '{{.Label "claw-lab.host"}} {{.Names}} {{.Status}}' | sort -V
}

full_only_light() { is_full && die "'$cmd' is not available for full lab '$LAB' (hosts are docker containers; use docker)"; return 0; }

case $cmd in
deps) [ ${#args[@]} -eq 0 ] || usage; ensure_deps ;;
up) cmd_up ;;
up-full) cmd_up_full ;;
down) [ ${#args[@]} -eq 0 ] || usage; cmd_down ;;
stop) full_only_light; cmd_stop ;;
start) full_only_light; cmd_start ;;
rekey) full_only_light; cmd_rekey ;;
link) full_only_light; cmd_link ;;
exec) if is_full; then cmd_full_exec; else cmd_exec; fi ;;
ssh) cmd_ssh ;;
status) if is_full; then cmd_full_status; else cmd_status; fi ;;
*) usage ;;
esac
