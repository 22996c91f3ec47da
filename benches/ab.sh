#!/usr/bin/env bash
# A/B of two chunkcast builds: their `chunkcast get` clients alternate, run after run, against
# one server, so that the machine's drift (which on a shared 2-core machine is larger than
# most changes) hits both alike.
#
# Usage: benches/ab.sh DIR_A DIR_B
#   DIR_A, DIR_B: directories holding a release `chunkcast` binary each (e.g. copies of
#   target/release taken before and after a change). The server is DIR_B's
#   `chunkcast-server` unless SERVER_BIN=DIR says otherwise.
#   env: SCHEME=tcp|tcps|quic (tcp)  RUNS=per build (8)  SIZE=file bytes (1000000000)
#        WORK=dir for the file and the output (a new one under /dev/shm when there is one)
#        SERVER_FLAGS_A, SERVER_FLAGS_B: an A/B of server options (DIR_A = DIR_B), or
#        SERVER_PER_SIDE=1: of whole builds, each side's client against its own server. Each
#        side's gets then go to a server of its own, restarted before each of its gets
#
# Prints, per build: the median of the client's own MB/s (open -> rename, digest verified,
# file compared with the source) and of the client's and the server's CPU seconds per GB.
set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $# -eq 2 ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
A=$1 B=$2
SCHEME=${SCHEME:-tcp}
RUNS=${RUNS:-8}
SIZE=${SIZE:-1000000000}
SERVER_BIN=${SERVER_BIN:-$B}
for d in "$A" "$B"; do [[ -x $d/chunkcast ]] || { echo "no chunkcast binary in $d" >&2; exit 2; }; done
[[ -x $SERVER_BIN/chunkcast-server ]] || { echo "no chunkcast-server in $SERVER_BIN" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

make_work_dir ab
trap cleanup_common EXIT

mkdir -p "$WORK/srv" "$WORK/out"
head -c "$SIZE" /dev/urandom >"$WORK/srv/file.bin"
PER_SIDE=${SERVER_PER_SIDE:-}${SERVER_FLAGS_A:-}${SERVER_FLAGS_B:-}

# Starts $1/chunkcast-server with flags $2 (split on spaces) and reads its address.
serve() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null
    # shellcheck disable=SC2086
    start_server "$1" "$WORK/srv" $2
    ADDR=$(field tcp)
    [[ $SCHEME == quic ]] && ADDR=$(field quic)
    FP=$(field cert-sha256)
}
side_server() { # $1: a or b
    local bin=$SERVER_BIN flags=${SERVER_FLAGS_B:-}
    if [[ $1 == a ]]; then
        flags=${SERVER_FLAGS_A:-}
        [[ -n ${SERVER_PER_SIDE:-} ]] && bin=$A
    fi
    serve "$bin" "$flags"
}
side_server b

get() { # $1: build dir; prints "MB/s client-CPU-s/GB server-CPU-s/GB"
    local out=$WORK/out/file.bin s0 s1
    rm -f "$out"
    s0=$(server_ticks)
    /usr/bin/time -f '%U %S' -o "$WORK/time.out" "$1/chunkcast" get \
        "$SCHEME://$ADDR/file.bin" -o "$out" --cert-sha256 "$FP" 2>"$WORK/get.err" \
        || { cat "$WORK/get.err" >&2; exit 1; }
    s1=$(server_ticks)
    grep -q 'digest verified' "$WORK/get.err" || { echo "not verified" >&2; exit 1; }
    cmp -s "$WORK/srv/file.bin" "$out" || { echo "the output differs from the source" >&2; exit 1; }
    awk -v s="$SIZE" -v a="$s0" -v b="$s1" \
        -v mb="$(saved_mb_per_s <"$WORK/get.err")" \
        '{printf "%s %.3f %.3f\n", mb, ($1+$2)/(s/1e9), (b-a)/100/(s/1e9)}' "$WORK/time.out"
}

get "$B" >/dev/null # warm: the server hashes the file on its first open
: >"$WORK/a.txt"
: >"$WORK/b.txt"
for _ in $(seq "$RUNS"); do
    # A server of each side's own: a warm get first (its tree is computed on first open).
    [[ -n $PER_SIDE ]] && side_server a && get "$A" >/dev/null
    get "$A" >>"$WORK/a.txt"
    [[ -n $PER_SIDE ]] && side_server b && get "$B" >/dev/null
    get "$B" >>"$WORK/b.txt"
done
echo "$SCHEME, $SIZE bytes, $RUNS gets per build, alternated${PER_SIDE:+; a server per side (flags A '${SERVER_FLAGS_A:-}', B '${SERVER_FLAGS_B:-}')}"
for x in a b; do
    f=$WORK/$x.txt
    name=$A; [[ $x == b ]] && name=$B
    printf '%-30s MB/s %7.1f  [%s]  CPU s/GB client %.2f server %.2f\n' "$name" \
        "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f1 "$f" | tr '\n' ' ' | sed 's/ $//')" \
        "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)"
done
