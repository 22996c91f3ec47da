#!/usr/bin/env bash
# chunkcast against this machine's ceilings, in one go, on loopback, with the same bytes:
#
#   - iperf3, one TCP stream, 5 s: default writes (128 KiB) and 1 MiB writes (chunkcast's
#     TCP write batch); the system congestion control, printed;
#   - quinn_ceiling: quinn alone with chunkcast's QUIC endpoints and transport config, both
#     with one shared runtime and with one current-thread runtime per side (--split, as two
#     processes run): the faster of the two is the ceiling; and the same with quinn's own
#     packet size (1 452 bytes, GSO), the ceiling issue 20 was first measured against;
#   - `chunkcast get` (release) of one SIZE file from `chunkcast-server --root` over tcp, tcps
#     and quic, every run digest-verified by the client and compared byte for byte (cmp).
#
#   - nginx -> curl: the plain web server a user would otherwise pick (Debian's nginx, started
#     by this script on loopback with a config it writes: sendfile on, access log off; HTTP,
#     and HTTPS with TLS 1.3), `curl -o` to the same tmpfs; and curl followed by sha256sum, a
#     download verified by hand. nginx and curl verify nothing; every chunkcast row does.
#     Skipped with a message without nginx/curl/openssl.
#
# The nginx and get rows alternate: each run measures every one of them once, in turn, after
# one warm-up get (the server hashes a file on its first get and caches its tree).
#
#   - get_floor: what a verified get cannot skip besides the transport (file read, BLAKE3, file
#     write; CRC32C is measured and printed, but a verified get's chunks carry header-only
#     CRCs), in CPU seconds per GB. Added to the transport's own CPU
#     per GB (iperf3's, quinn_ceiling's), it gives the least CPU a get can spend; with both
#     ends sharing the machine's cores, cores / that sum bounds what any get could reach here.
#
# Each row is the median of RUNS runs (all runs printed). Ratios: tcp and tcps against iperf3
# (the issue's target: tcp >= 60 % of iperf3's default single stream), quic against
# quinn_ceiling (target >= 90 %). Files live on tmpfs (/dev/shm) when there is one, so no row
# pays for a disk (iperf3 doesn't either); set WORK=DIR to choose. During the first get of a
# file the server also hashes it (BLAKE3, sent after the last chunk; cached afterwards).
#
# Usage: benches/compare.sh   (env: SIZE=1000000000 RUNS=3 IPERF_SECS=5 WORK=DIR BIN=DIR)
# Needs release binaries; builds them if missing. Installs iperf3 with apt-get if it can,
# else skips its rows with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

SIZE=${SIZE:-1000000000}
RUNS=${RUNS:-3}
IPERF_SECS=${IPERF_SECS:-5}
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}

if [[ ! -x $BIN/chunkcast || ! -x $BIN/chunkcast-server || ! -x $BIN/quinn_ceiling || ! -x $BIN/get_floor ]]; then
    echo "building release binaries..." >&2
    cargo build --release -p chunkcast -p chunkcast-server -p chunkcast-benches \
        --bin chunkcast --bin chunkcast-server --bin quinn_ceiling --bin get_floor >&2
fi
CORES=$(nproc)
HAVE_TIME=0; [[ -x /usr/bin/time ]] && HAVE_TIME=1

make_work_dir compare
IPERF_PID=
NGINX_PID=
cleanup() {
    [[ -n $IPERF_PID ]] && kill "$IPERF_PID" 2>/dev/null
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    cleanup_common
}
trap cleanup EXIT

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b>0 && a==a+0) printf "%.0f %%", 100*a/b; else print "-"}'; }
gbit() { awk -v m="$1" 'BEGIN {printf "%.2f", m*8/1000}'; }

CC=$(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo unknown)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), tcp congestion control $CC"
echo "work dir: $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))"
echo

ROWS=()
row() { ROWS+=("$(printf '%-44s %9s %7s  %-26s %-8s %s' "$1" "$2" "$(gbit "$2")" "$3" "$4" "$5")"); }

# --- iperf3 ---------------------------------------------------------------------------------
IPERF_DEFAULT=nan
IPERF_1M=nan
IPERF_MIN_CPU=nan
if ! command -v iperf3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "installing iperf3..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null) \
        || echo "could not install iperf3" >&2
fi
iperf_run() { # $@: extra client flags; prints "MB/s CPU-s/GB" (received; sender + receiver CPU)
    local port=$((20000 + RANDOM % 20000))
    iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
    IPERF_PID=$!
    sleep 0.5
    iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECS" -J "$@" >"$WORK/iperf.json" 2>/dev/null || true
    wait "$IPERF_PID" 2>/dev/null || true
    IPERF_PID=
    python3 - "$WORK/iperf.json" <<'PY' 2>/dev/null || echo "nan nan"
import json, sys
end = json.load(open(sys.argv[1]))["end"]
got, cpu = end["sum_received"], end["cpu_utilization_percent"]
gb = got["bytes"] / 1e9
print("%.1f %.3f" % (got["bits_per_second"] / 8e6,
                     (cpu["host_total"] + cpu["remote_total"]) / 100 * got["seconds"] / gb))
PY
}
if command -v iperf3 >/dev/null 2>&1; then
    for spec in "default:128 KiB writes:" "1M:1 MiB writes:-l 1M"; do
        name=${spec%%:*}; rest=${spec#*:}; label=${rest%%:*}; flags=${rest#*:}
        runs=()
        cpus=()
        for _ in $(seq "$RUNS"); do
            # shellcheck disable=SC2086
            read -r mbps cpu < <(iperf_run $flags)
            runs+=("$mbps")
            cpus+=("$cpu")
        done
        med=$(printf '%s\n' "${runs[@]}" | median)
        cpu=$(printf '%s\n' "${cpus[@]}" | median)
        # The bound below takes the least CPU seen: the most generous bound.
        if [[ $name == default ]]; then IPERF_DEFAULT=$med; else IPERF_1M=$med; fi
        IPERF_MIN_CPU=$(printf '%s\n' "${cpus[@]}" "$IPERF_MIN_CPU" | grep -v nan | minimum)
        row "iperf3 tcp, 1 stream, $label" "$med" "${runs[*]}" "ceiling" "cc=$CC, ${IPERF_SECS}s; CPU s/GB both ends $cpu"
    done
else
    echo "iperf3 not available: skipping its rows" >&2
fi

# --- quinn ceiling --------------------------------------------------------------------------
# Both runtime shapes, alternated; the faster median is the ceiling (and its CPU per GB).
QUINN=0
QUINN_MIN_CPU=nan
QUINN_SHAPE=none
for shape in shared split; do
    runs=()
    cpus=()
    for _ in $(seq "$RUNS"); do
        flag=()
        [[ $shape == split ]] && flag=(--split)
        if [[ $HAVE_TIME == 1 ]]; then
            line=$(/usr/bin/time -f 'cpu %U %S' -o "$WORK/quinn.time" "$BIN/quinn_ceiling" "$SIZE" "${flag[@]}")
        else
            line=$("$BIN/quinn_ceiling" "$SIZE" "${flag[@]}")
            echo "cpu nan nan" >"$WORK/quinn.time"
        fi
        runs+=("$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$line")")
        cpus+=("$(awk -v s="$SIZE" '/^cpu/ {printf "%.3f", ($2+$3)/(s/1e9)}' "$WORK/quinn.time")")
    done
    med=$(printf '%s\n' "${runs[@]}" | median)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    row "quinn_ceiling ($shape runtime), 1 uni stream" "$med" "${runs[*]}" "" "1 MiB writes, read_chunk, no copy; CPU s/GB both ends $cpu"
    if awk -v a="$med" -v b="$QUINN" 'BEGIN {exit !(a > b)}'; then QUINN=$med; QUINN_SHAPE=$shape; fi
    QUINN_MIN_CPU=$(printf '%s\n' "${cpus[@]}" "$QUINN_MIN_CPU" | grep -v nan | minimum)
done
ROWS+=("$(printf '%-44s %s' "" "-> ceiling: the $QUINN_SHAPE runtime's $QUINN MB/s")")
# quinn as it ships: its own packet size (MTU discovery up to 1 452 bytes) and GSO, the
# ceiling issue 20 measured its 67-73 % against; chunkcast's loopback paths go up to 64 KiB.
runs=()
for _ in $(seq "$RUNS"); do
    flag=()
    [[ $QUINN_SHAPE == split ]] && flag=(--split)
    line=$(CHUNKCAST_QUIC_MAX_UDP_PAYLOAD=1452 CHUNKCAST_QUIC_GSO=on "$BIN/quinn_ceiling" "$SIZE" "${flag[@]}")
    runs+=("$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$line")")
done
QUINN_PLAIN=$(printf '%s\n' "${runs[@]}" | median)
row "quinn_ceiling, quinn's packets (1452, GSO)" "$QUINN_PLAIN" "${runs[*]}" "" "the $QUINN_SHAPE runtime; quinn's default packet size"

# --- the floor: what a verified get must do besides the transport ----------------------------

# --- chunkcast get --------------------------------------------------------------------------
mkdir -p "$WORK/srv" "$WORK/out"
echo "writing a $SIZE-byte test file..." >&2
head -c "$SIZE" /dev/urandom >"$WORK/srv/file.bin"
runs=()
for _ in $(seq "$RUNS"); do
    runs+=("$("$BIN/get_floor" "$WORK/srv/file.bin" "$WORK/out")")
done
floor_item() { printf '%s\n' "${runs[@]}" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | minimum; }
F_READ=$(floor_item read); F_CRC=$(floor_item crc32c); F_B3=$(floor_item blake3); F_WRITE=$(floor_item write)
# A verified get's chunks carry a CRC of their header only (HEADER_CRC): the payload is
# read, hashed once and written, and no end passes over it for a CRC.
EXTRA=$(awk -v r="$F_READ" -v b="$F_B3" -v w="$F_WRITE" 'BEGIN {printf "%.3f", r + b + w}')
# On plain TCP the server sends the file from the page cache (sendfile): no read.
TCP_EXTRA=$(awk -v b="$F_B3" -v w="$F_WRITE" 'BEGIN {printf "%.3f", b + w}')
bound() { awk -v n="$CORES" -v t="$1" -v e="$2" 'BEGIN {if (t==t+0) printf "%.1f", n*1000/(t+e); else print "nan"}'; }
TCP_BOUND=$(bound "$IPERF_MIN_CPU" "$TCP_EXTRA")
QUIC_BOUND=$(bound "$QUINN_MIN_CPU" "$EXTRA")
ROWS+=("$(printf '%-44s %s' "get_floor (CPU s/GB, least of $RUNS)" "file read $F_READ + BLAKE3 $F_B3 + file write $F_WRITE = $EXTRA (CRC32C $F_CRC per end, not paid: header-only CRCs)")")
row "bound, tcp: cores / (iperf3 CPU + floor)" "$TCP_BOUND" "" "" "$CORES / ($IPERF_MIN_CPU + $TCP_EXTRA: no read, sendfile), least CPU seen: what a get with no overhead could do"
ROWS+=("$(printf '%-44s %s' "" "-> $(ratio "$TCP_BOUND" "$IPERF_DEFAULT") of iperf3")")
row "bound, quic: cores / (quinn CPU + floor)" "$QUIC_BOUND" "" "" "$CORES / ($QUINN_MIN_CPU + $EXTRA)"
ROWS+=("$(printf '%-44s %s' "" "-> $(ratio "$QUIC_BOUND" "$QUINN") of quinn_ceiling")")
# --- nginx → curl ---------------------------------------------------------------------------
NGINX_HTTP=nan
NGINX_HTTPS=nan
if command -v nginx >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    NG=$WORK/nginx
    mkdir -p "$NG/logs" "$NG/tmp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -keyout "$NG/key.pem" -out "$NG/cert.pem" 2>/dev/null
    HTTP_PORT=$((20000 + RANDOM % 20000))
    HTTPS_PORT=$((HTTP_PORT + 1))
    # As root, nginx's workers would switch to nobody, who cannot read the private work dir.
    USER_LINE=""
    [[ $EUID == 0 ]] && USER_LINE="user root;"
    cat >"$NG/nginx.conf" <<CONF
$USER_LINE
daemon off;
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    types { application/octet-stream bin; }
    server { listen 127.0.0.1:$HTTP_PORT; root $WORK/srv; }
    server {
        listen 127.0.0.1:$HTTPS_PORT ssl;
        ssl_certificate $NG/cert.pem;
        ssl_certificate_key $NG/key.pem;
        ssl_protocols TLSv1.3;
        root $WORK/srv;
    }
}
CONF
    nginx -p "$NG" -c "$NG/nginx.conf" 2>"$NG/logs/start.log" &
    NGINX_PID=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null -r 0-0 "http://127.0.0.1:$HTTP_PORT/file.bin" && break
        sleep 0.1
    done
    NGINX=1
else
    echo "nginx, curl or openssl not available: skipping the nginx rows" >&2
    NGINX=0
fi

start_server "$BIN" "$WORK/srv"
TCP=$(field tcp); QUIC=$(field quic); FP=$(field cert-sha256)
echo "server: $LINE" >&2

# One measurement of each row per run, the rows alternated within the run, so that whatever else
# the machine does at a moment falls on every row alike. Each row's values go, one per line, to
# $WORK/res/ROW.FIELD; the table takes their medians.
RES=$WORK/res
mkdir -p "$RES"
put() { echo "$3" >>"$RES/$1.$2"; }
med_of() { if [[ -s $RES/$1.$2 ]]; then median <"$RES/$1.$2"; else echo nan; fi; }
all_of() { if [[ -s $RES/$1.$2 ]]; then tr '\n' ' ' <"$RES/$1.$2" | sed 's/ $//'; fi; }

curl_once() { # $1 row, $2 URL: MB/s as curl measured it (connect included), bytes compared
    rm -f "$WORK/out/file.bin"
    put "$1" mbps "$(curl -sS -k -o "$WORK/out/file.bin" -w '%{speed_download}' "$2" | awk '{printf "%.1f", $1/1e6}')"
    cmp -s "$WORK/srv/file.bin" "$WORK/out/file.bin" || { echo "$1: wrong bytes" >&2; exit 1; }
}
curl_hash_once() { # wall time of curl then sha256sum: a download verified by hand
    rm -f "$WORK/out/file.bin"
    local t0 t1
    t0=$(date +%s.%N)
    curl -sS -o "$WORK/out/file.bin" "http://127.0.0.1:$HTTP_PORT/file.bin"
    sha256sum "$WORK/out/file.bin" >/dev/null
    t1=$(date +%s.%N)
    put nginx_hash mbps "$(awk -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", s/1e6/(b-a)}')"
}
get_once() { # $1 scheme, $2 output dir, $3 row: one verified get, its rate and CPU
    local scheme=$1 out=$2/file.bin row=$3 addr=$TCP
    [[ $scheme == quic ]] && addr=$QUIC
    rm -f "$out"
    local s0 t0 t1 s1 saved
    s0=$(server_ticks)
    t0=$(date +%s.%N)
    local cmd=("$BIN/chunkcast" get "$scheme://$addr/file.bin" -o "$out" --cert-sha256 "$FP")
    if [[ $HAVE_TIME == 1 ]]; then cmd=(/usr/bin/time -f '%U %S' -o "$WORK/time.out" "${cmd[@]}"); fi
    "${cmd[@]}" 2>"$WORK/get.err" || { echo "get over $scheme failed:" >&2; cat "$WORK/get.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    s1=$(server_ticks)
    saved=$(grep '^saved' "$WORK/get.err")
    if ! grep -q 'digest verified' <<<"$saved" || ! cmp -s "$WORK/srv/file.bin" "$out"; then
        echo NO >"$RES/$row.unverified"
    fi
    put "$row" mbps "$(saved_mb_per_s <<<"$saved")"
    put "$row" wall "$(awk -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", s/1e6/(b-a)}')"
    put "$row" scpu "$(awk -v s="$SIZE" -v a="$s0" -v b="$s1" 'BEGIN {printf "%.2f", (b-a)/100/(s/1e9)}')"
    if [[ $HAVE_TIME == 1 ]]; then
        put "$row" ccpu "$(awk -v s="$SIZE" '{printf "%.2f", ($1+$2)/(s/1e9)}' "$WORK/time.out")"
    fi
    rm -f "$out"
}

# The first get of a file hashes it on the server (its BLAKE3 tree, cached afterwards): done
# once before the runs, as a user's second download would find it.
echo "warm-up get (the server hashes the file once)..." >&2
get_once tcp "$WORK/out" warmup
DISK_OUT=
if [[ $(df -T "$WORK" | awk 'NR==2 {print $2}') == tmpfs ]]; then
    # The same get onto a disk-backed file system (DISK_DIR), fsync included, when the rows
    # use tmpfs.
    DISK_OUT=${DISK_DIR:-$PWD/target/compare-out}
    mkdir -p "$DISK_OUT"
fi
for run in $(seq "$RUNS"); do
    echo "run $run of $RUNS..." >&2
    if [[ $NGINX == 1 ]]; then
        curl_once nginx_http "http://127.0.0.1:$HTTP_PORT/file.bin"
        curl_once nginx_https "https://127.0.0.1:$HTTPS_PORT/file.bin"
        curl_hash_once
        rm -f "$WORK/out/file.bin"
    fi
    for scheme in tcp tcps quic; do
        get_once "$scheme" "$WORK/out" "get_$scheme"
    done
    if [[ -n $DISK_OUT ]]; then get_once tcp "$DISK_OUT" get_disk; fi
done
if [[ -n $NGINX_PID ]]; then
    kill "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=
fi

NGINX_HTTP=$(med_of nginx_http mbps)
NGINX_HTTPS=$(med_of nginx_https mbps)
if [[ $NGINX == 1 ]]; then
    NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*\///')
    row "nginx -> curl -o, http" "$NGINX_HTTP" "$(all_of nginx_http mbps)" "peer" "nginx $NGINX_VERSION, sendfile; verifies nothing"
    row "nginx -> curl -o, https (TLS 1.3)" "$NGINX_HTTPS" "$(all_of nginx_https mbps)" "peer" "verifies nothing"
    row "nginx -> curl -o, http, then sha256sum" "$(med_of nginx_hash mbps)" "$(all_of nginx_hash mbps)" "peer" "verified by hand (wall, process starts included)"
fi

get_row() { # $1 scheme, $2 row, $3 label suffix
    local scheme=$1 r=$2 verified=yes
    [[ -f $RES/$r.unverified ]] && verified=NO
    local med cc
    med=$(med_of "$r" mbps)
    cc=$(med_of "$r" ccpu); [[ $cc == nan ]] && cc="?"
    local vs note
    case $scheme in
        tcp)
            vs="$(ratio "$med" "$IPERF_DEFAULT") of iperf3, $(ratio "$med" "$IPERF_1M") of iperf3 -l 1M, $(ratio "$med" "$NGINX_HTTP") of nginx http"
            note="1 MiB write batches, 64 KiB chunks, cc=$CC" ;;
        tcps)
            vs="$(ratio "$med" "$IPERF_DEFAULT") of iperf3, $(ratio "$med" "$IPERF_1M") of iperf3 -l 1M, $(ratio "$med" "$NGINX_HTTPS") of nginx https"
            note="1 MiB write batches, 64 KiB chunks, cc=$CC" ;;
        quic)
            vs="$(ratio "$med" "$QUINN") of quinn_ceiling, $(ratio "$med" "$QUINN_PLAIN") of quinn at its own packet size, $(ratio "$med" "$QUIC_BOUND") of the quic bound"
            note="64 KiB chunks, one uni stream" ;;
    esac
    row "chunkcast get $scheme$3 (verified: $verified)" "$med" "$(all_of "$r" mbps)" "" \
        "$note; wall incl. process start $(med_of "$r" wall) MB/s; CPU s/GB client $cc, server $(med_of "$r" scpu)"
    ROWS+=("$(printf '%-44s %s' "" "-> $vs")")
}

for scheme in tcp tcps quic; do
    get_row "$scheme" "get_$scheme" ""
done
if [[ -n $DISK_OUT ]]; then get_row tcp get_disk " to $(df -T "$DISK_OUT" | awk 'NR==2 {print $2}')"; fi

echo
printf '%-44s %9s %7s  %-26s %-8s %s\n' "ROW (median of $RUNS)" "MB/s" "Gbit/s" "runs (MB/s)" "" "notes"
printf '%s\n' "${ROWS[@]}"
echo
echo "targets: tcp >= 60 % of iperf3 (default writes) and >= nginx http, tcps >= nginx https, quic >= 90 % of quinn_ceiling (issue 20; the quic bound says how much of it a get can reach here); MB = 10^6 bytes"
echo "bounds: both ends share $CORES cores; a get costs at least the transport's CPU plus the floor per GB"
