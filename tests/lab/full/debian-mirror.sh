# Sourced by the full-lab scripts (image.sh, mirror.sh, stack.sh); defines `debian_mirror`.
# Needs a `die` function.

# The Debian archive this machine's apt uses: the first enabled source whose URI ends in /debian and whose
# suite is not -security (deb822 .sources and one-line .list files).
debian_mirror() {
    if [ -n "${CLAW_LAB_DEBIAN_MIRROR:-}" ]; then echo "${CLAW_LAB_DEBIAN_MIRROR%/}"; return; fi
    local url
    url=$(
        shopt -s nullglob
        for f in /etc/apt/sources.list.d/*.sources; do
            awk 'BEGIN { RS = ""; FS = "\n" }
                 { uris = ""; suites = ""; enabled = 1
                   for (i = 1; i <= NF; i++) {
                     if ($i ~ /^URIs:/)    { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
                     if ($i ~ /^Suites:/)  { suites = $i; sub(/^Suites:[ \t]*/, "", suites) }
                     if ($i ~ /^Enabled:[ \t]*no/) enabled = 0 }
                   if (enabled && suites !~ /-security/) { n = split(uris, u, /[ \t]+/); for (j = 1; j <= n; j++) print u[j] } }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            sed -E -n 's/^[ \t]*deb[ \t]+(\[[^]]*\][ \t]+)?([^ \t]+)[ \t]+([^ \t]+).*/\2 \3/p' "$f" |
                awk '$2 !~ /-security/ { print $1 }'
        done
    ) || true
    url=$(printf '%s\n' "$url" | grep -E '^(https?|file)://[^ ]*/debian/?$' | head -n1 || true)
    [ -n "$url" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; set CLAW_LAB_DEBIAN_MIRROR=URL"
    echo "${url%/}"
}
