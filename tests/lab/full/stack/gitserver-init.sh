#!/bin/sh
# PID 1 of the claw-lab/gitserver image: an SSH git remote (user git, shell git-shell, repositories in /srv/git).
#   AUTHORIZED_KEYS   public key lines allowed to log in as git (written to ~git/.ssh/authorized_keys)
# Uses /etc/ssh/ssh_host_ed25519_key if it is there (mount one for known host keys), else generates it; the
# host public key is printed to the log either way. Then sshd runs in the foreground, logging to stderr.
set -eu
home=$(getent passwd git | cut -d: -f6)
install -d -m 700 -o git -g git "$home/.ssh"
printf '%s\n' "${AUTHORIZED_KEYS:-}" >"$home/.ssh/authorized_keys"
chown git:git "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -C gitserver -f /etc/ssh/ssh_host_ed25519_key
echo "gitserver: host key $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key)" >&2
mkdir -p /run/sshd
chmod 755 /run/sshd
exec /usr/sbin/sshd -D -e "$@"
