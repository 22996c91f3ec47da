# Shared by compare.sh and ab.sh (sourced, not run): a work directory, a chunkcast server on
# loopback, and the arithmetic both print.

# Sets WORK to a new directory named after $1 on tmpfs when there is one (no row pays for a
# disk), unless WORK is set already; it is removed on exit only if made here.
make_work_dir() {
    if [[ -z ${WORK:-} ]]; then
        local base
        if [[ -d /dev/shm && -w /dev/shm ]]; then base=/dev/shm; else base=${TMPDIR:-/tmp}; fi
        WORK=$(mktemp -d "$base/chunkcast-$1.XXXXXX")
        CLEAN_WORK=1
    else
        mkdir -p "$WORK"
        CLEAN_WORK=0
    fi
}

SERVER_PID=
# Kills what start_server started (by its pid) and removes a work dir made by make_work_dir.
cleanup_common() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ ${CLEAN_WORK:-0} == 1 ]] && rm -rf "$WORK"
    return 0
}

# Starts $1/chunkcast-server serving $2 on 127.0.0.1:0 (more arguments go to the server) and
# waits for its `listening` line, which it keeps in LINE (read its fields with `field tcp`,
# `field quic`, `field cert-sha256`).
start_server() {
    local bin=$1 root=$2
    shift 2
    "$bin/chunkcast-server" --root "$root" --listen 127.0.0.1:0 "$@" >"$WORK/server.out" 2>"$WORK/server.log" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q '^listening' "$WORK/server.out" 2>/dev/null && break
        sleep 0.1
    done
    LINE=$(grep '^listening' "$WORK/server.out") \
        || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
}
field() { tr ' ' '\n' <<<"$LINE" | sed -n "s/^$1=//p"; }

# The server's CPU time so far (utime + stime, in 1/100 s).
server_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$SERVER_PID/stat"; }

# The rate in MB/s of the `saved ...` line on stdin: the client prints it in decimal units
# (`734.2 MB/s`, `1.43 GB/s`).
saved_mb_per_s() {
    sed -n 's/.*bytes, \([0-9.]*\) \([kMG]\)B\/s.*/\1 \2/p' |
        awk '{f = ($2 == "G") ? 1000 : ($2 == "k") ? 0.001 : 1; printf "%.1f\n", $1 * f}'
}

# Statistics of numbers on stdin, one per line.
minimum() { sort -g | head -1; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
