#!/bin/sh
# Entry point of the claw-lab/redis image (Redis 7.0 from Debian bookworm), standing in for the official
# redis:7.4.N-bookworm, whose contract it keeps and does not go beyond (templates/claw-ai/contract.toml):
#   - a first argument that is an option (`-...`) or a config file (`*.conf`) is run as `redis-server ARGS`;
#   - redis-server started as root (the image has no USER) first gives /data's files that are not redis's to
#     redis, then runs again as redis (999:999); started as another user, it runs as that user;
#   - the umask becomes 0077 when it is the default 0022 (new files are private);
#   - protected mode is off unless a config says otherwise (the official build compiles its default off; Debian's
#     is on, so a redis-server started without a config file gets `--protected-mode no` first; options given
#     after it win). With a config file the Debian default stays: stricter than the official image, not kinder;
#   - nothing is read from the environment: REDIS_PASSWORD in particular is ignored, as the official image
#     ignores it. A password comes from a config file (`requirepass`) given as the first argument.
set -e
case ${1:-} in -* | *.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . ! -user redis -exec chown redis {} +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
[ "$(umask)" != 0022 ] || umask 0077
if [ "${1:-}" = redis-server ]; then
    case ${2:-} in '' | -*) shift; set -- redis-server --protected-mode no "$@" ;; esac
fi
exec "$@"
