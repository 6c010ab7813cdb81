#!/usr/bin/env bash
# A two-site Kaskade mesh with a real etcd, on one machine, loopback addresses only.
#
#   deploy/local-mesh.sh
#
# Starts etcd (temporary data directory, on 127.0.0.1:2379, or on a free high port when 2379 is
# taken) and four nodes: n1, n2 in site "a" and n3, n4 in site "b", each on its own loopback
# address 127.0.0.11-14 (HTTP :8080, QUIC relay :7100, media UDP :7000), with relay certificates
# made by `kaskade certs` in the temporary directory. Prints the URLs to open and how to drain a
# node. Ctrl-C (or SIGTERM) stops everything and removes the temporary directory.
#
# Needs: bash, coreutils, util-linux (setsid), etcd (Debian: `apt-get install etcd-server`),
# and target/release/kaskade (built with `cargo build --release -p kaskade-node` when missing,
# which needs cargo and protoc: `apt-get install protobuf-compiler`). curl is used for the
# health checks when installed (bash's /dev/tcp otherwise).
#
# Settings (environment):
#   KASKADE_BIN=PATH          the kaskade binary (default: target/release/kaskade of this checkout)
#   MESH_ETCD_BIN=PATH        the etcd binary (default: etcd on PATH, else /usr/bin/etcd)
#   MESH_ETCD_PORT=N          etcd client port (peer port N+1); default 2379, else a free one
#   MESH_READY_TIMEOUT=SECS   how long etcd and each node get to become ready (default 60)
#   MESH_DRAIN_DEADLINE=SECS  the nodes' --drain-deadline-secs (default 30)
#   MESH_KEEP=1               keep the temporary directory (logs, certs, etcd data) on exit
#   KASKADE_LOG=...           log filter of the nodes (default info)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KASKADE=${KASKADE_BIN:-$ROOT/target/release/kaskade}
READY_TIMEOUT=${MESH_READY_TIMEOUT:-60}
DRAIN_DEADLINE=${MESH_DRAIN_DEADLINE:-30}

NODES=(n1 n2 n3 n4)
declare -A SITE=([n1]=a [n2]=a [n3]=b [n4]=b)
declare -A IP=([n1]=127.0.0.11 [n2]=127.0.0.12 [n3]=127.0.0.13 [n4]=127.0.0.14)
HTTP_PORT=8080
RTC_PORT=7000
RELAY_PORT=7100

declare -A PID=()   # node id -> pid, "etcd" -> pid
TMP=""

say() { printf '[local-mesh] %s\n' "$*"; }
die() { printf '[local-mesh] error: %s\n' "$*" >&2; exit 1; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# True when something accepts TCP connections on $1:$2 (bash's /dev/tcp, no extra tools).
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Prints the body of an HTTP GET (curl when installed, else a bare HTTP/1.0 request).
http_get() {
    local url=$1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 3 "$url"
        return
    fi
    local rest=${url#http://} hostport path host port response
    hostport=${rest%%/*}
    path=/${rest#*/}
    [[ $rest == */* ]] || path=/
    host=${hostport%:*}
    port=${hostport##*:}
    # shellcheck disable=SC2016 # expanded by the inner bash
    response=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1:$2" >&3
        cat <&3' _ "$host" "$port" "$path") || return 1
    [[ ${response%%$'\r'*} == "HTTP/1."?" 200"* ]] || return 1
    printf '%s\n' "${response#*$'\r\n\r\n'}"
}

show_log() {
    local log=$1
    [[ -f $log ]] || return 0
    printf -- '----- last lines of %s (backtraces left out) -----\n' "$log" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$log" |
        awk '/^Stack backtrace:/ { skip = 1; next } skip && /^ / { next } { skip = 0; print }' |
        tail -n 25 >&2 || true
    printf -- '-----\n' >&2
}

# Stops the pids given ($2...), politely: SIGTERM (a node drains; with nobody connected it exits
# within moments), a second SIGTERM after $1 seconds (a node then stops at once), SIGKILL after
# 5 more.
any_alive() {
    local p
    for p; do alive "$p" && return 0; done
    return 1
}

stop_pids() {
    local grace=$1
    shift
    local pids=() p i
    for p in "$@"; do alive "$p" && pids+=("$p"); done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
    say "still running after ${grace}s, signalling again: ${pids[*]}"
    for p in "${pids[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
    for p in "${pids[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
    return 0
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local node_pids=() n
    for n in "${NODES[@]}"; do [[ -n ${PID[$n]:-} ]] && node_pids+=("${PID[$n]}"); done
    if ((${#node_pids[@]})) || [[ -n ${PID[etcd]:-} ]]; then
        say "stopping the nodes, then etcd"
    fi
    # Nodes first, while etcd still answers, so they leave the registry cleanly. The first SIGTERM
    # drains, but with every node stopping there is nowhere to move participants to: after 3 s
    # the second SIGTERM stops them at once.
    stop_pids 3 "${node_pids[@]}"
    stop_pids 10 "${PID[etcd]:-}"
    wait 2>/dev/null
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${MESH_KEEP:-} == 1 || $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ]]; then
            say "kept $TMP (logs, certs, etcd data)"
        else
            rm -rf "$TMP"
        fi
    fi
    say "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- prerequisites ---------------------------------------------------------------------------

command -v setsid >/dev/null || die "setsid not found (Debian: apt-get install util-linux)"
ETCD=${MESH_ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
[[ -x $ETCD ]] || die "etcd not found; on Debian: sudo apt-get install etcd-server (or set MESH_ETCD_BIN)"

if [[ ! -x $KASKADE ]]; then
    [[ -z ${KASKADE_BIN:-} ]] || die "KASKADE_BIN=$KASKADE is not an executable"
    command -v cargo >/dev/null || die "$KASKADE is missing and cargo is not installed (https://rustup.rs)"
    command -v protoc >/dev/null ||
        die "building kaskade needs protoc (etcd-client's build script): sudo apt-get install protobuf-compiler"
    say "building kaskade: cargo build --release -p kaskade-node"
    (cd "$ROOT" && cargo build --release -p kaskade-node)
    [[ -x $KASKADE ]] || die "the build did not produce $KASKADE"
fi

for n in "${NODES[@]}"; do
    if tcp_open "${IP[$n]}" "$HTTP_PORT"; then
        die "${IP[$n]}:$HTTP_PORT is already in use (another local-mesh.sh running?)"
    fi
done

# etcd ports: 2379/2380 when free, else a free pair of high ports.
if [[ -n ${MESH_ETCD_PORT:-} ]]; then
    ETCD_PORT=$MESH_ETCD_PORT
    if tcp_open 127.0.0.1 "$ETCD_PORT" || tcp_open 127.0.0.1 $((ETCD_PORT + 1)); then
        die "MESH_ETCD_PORT=$ETCD_PORT (or the peer port $((ETCD_PORT + 1))) is in use"
    fi
else
    ETCD_PORT=2379
    tries=0
    while tcp_open 127.0.0.1 "$ETCD_PORT" || tcp_open 127.0.0.1 $((ETCD_PORT + 1)); do
        ((++tries <= 50)) || die "found no free port pair for etcd on 127.0.0.1"
        ETCD_PORT=$((20000 + RANDOM % 20000))
    done
fi
ETCD_URL=http://127.0.0.1:$ETCD_PORT
ETCD_PEER_URL=http://127.0.0.1:$((ETCD_PORT + 1))

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kaskade-mesh.XXXXXX")
mkdir -p "$TMP/logs"

# The children get none of the caller's KASKADE_* / ETCD_* settings (a stray KASKADE_PEERS or
# KASKADE_CONFIG would change the mesh), except the log settings.
clean_env=()
while IFS= read -r var; do
    case $var in
        KASKADE_LOG | KASKADE_LOG_FORMAT) ;;
        KASKADE_* | ETCD_*) clean_env+=(-u "$var") ;;
    esac
done < <(compgen -e)

# Starts "$@" as PID[$1] in its own session (so a Ctrl-C in the terminal reaches only this script,
# which then stops everything in order), output to the log $2.
spawn() {
    local key=$1 log=$2
    shift 2
    env "${clean_env[@]}" NO_COLOR=1 setsid "$@" </dev/null >"$log" 2>&1 &
    PID[$key]=$!
}

# Waits until command "$2..." succeeds, while pid $1 lives; fails on timeout or exit.
wait_until() {
    local pid=$1
    shift
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@"; do
        alive "$pid" || return 2
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# ---- etcd --------------------------------------------------------------------------------------

say "starting etcd on $ETCD_URL (data in $TMP/etcd)"
spawn etcd "$TMP/logs/etcd.log" "$ETCD" \
    --name local-mesh \
    --data-dir "$TMP/etcd" \
    --listen-client-urls "$ETCD_URL" \
    --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$ETCD_PEER_URL" \
    --initial-advertise-peer-urls "$ETCD_PEER_URL" \
    --initial-cluster "local-mesh=$ETCD_PEER_URL" \
    --initial-cluster-state new \
    --initial-cluster-token "kaskade-local-mesh-$$"

etcd_healthy() {
    if command -v curl >/dev/null 2>&1; then
        [[ $(http_get "$ETCD_URL/health" 2>/dev/null) == *'"health":"true"'* ]]
    else
        tcp_open 127.0.0.1 "$ETCD_PORT" && grep -q 'ready to serve client requests' "$TMP/logs/etcd.log"
    fi
}
wait_until "${PID[etcd]}" etcd_healthy || {
    rc=$?
    show_log "$TMP/logs/etcd.log"
    ((rc == 2)) && die "etcd exited during start-up (log above)"
    die "etcd did not become healthy on $ETCD_URL within ${READY_TIMEOUT}s"
}
say "etcd healthy"

# ---- certificates and nodes --------------------------------------------------------------------

"$KASKADE" certs --out "$TMP/certs" "${NODES[@]}" >"$TMP/logs/certs.log" 2>&1 ||
    { show_log "$TMP/logs/certs.log"; die "kaskade certs failed"; }

for n in "${NODES[@]}"; do
    ip=${IP[$n]}
    say "starting $n (site ${SITE[$n]}) on $ip"
    spawn "$n" "$TMP/logs/$n.log" "$KASKADE" node \
        --node-id "$n" \
        --site "${SITE[$n]}" \
        --http "$ip:$HTTP_PORT" \
        --rtc "$ip:$RTC_PORT" \
        --relay "$ip:$RELAY_PORT" \
        --certs "$TMP/certs" \
        --etcd "$ETCD_URL" \
        --site-distance a:b=10 \
        --drain-deadline-secs "$DRAIN_DEADLINE" \
        --insecure-dev
done

node_ready() {
    local n=$1
    grep -q "Kaskade node $n ready" "$TMP/logs/$n.log" || return 1
    if command -v curl >/dev/null 2>&1; then
        http_get "http://${IP[$n]}:$HTTP_PORT/healthz" >/dev/null 2>&1 || return 1
    fi
}
for n in "${NODES[@]}"; do
    wait_until "${PID[$n]}" node_ready "$n" || {
        rc=$?
        show_log "$TMP/logs/$n.log"
        ((rc == 2)) && die "node $n exited during start-up (log above)"
        die "node $n did not become ready within ${READY_TIMEOUT}s"
    }
    say "$n ready"
done

# Every node should see all four in the registry (they register within a lease keep-alive).
live_nodes_of() {
    local status
    status=$(http_get "http://${IP[$1]}:$HTTP_PORT/admin/status" 2>/dev/null) || return 1
    status=${status#*\"live_nodes\":[}
    printf '%s\n' "${status%%]*}"
}
all_listed() {
    local n m live
    for n in "${NODES[@]}"; do
        live=$(live_nodes_of "$n") || return 1
        for m in "${NODES[@]}"; do [[ $live == *"\"$m\""* ]] || return 1; done
    done
}
deadline=$((SECONDS + 15))
until all_listed; do
    if ((SECONDS >= deadline)); then
        say "warning: not every node lists all four in /admin/status yet:"
        for n in "${NODES[@]}"; do say "  $n: live_nodes [$(live_nodes_of "$n" || echo '?')]"; done
        break
    fi
    sleep 0.5
done
all_listed && say "every node sees n1 n2 n3 n4 in the registry"

# ---- ready -------------------------------------------------------------------------------------

cat <<EOF

Kaskade mesh with etcd is up (etcd $ETCD_URL, logs in $TMP/logs):

  site a:  n1  http://${IP[n1]}:$HTTP_PORT/
           n2  http://${IP[n2]}:$HTTP_PORT/
  site b:  n3  http://${IP[n3]}:$HTTP_PORT/
           n4  http://${IP[n4]}:$HTTP_PORT/

Open two of them (say n1 and n3) in two browser tabs and join the same room: the two
participants are on nodes of different sites, linked over the QUIC relay.

  status:    curl http://${IP[n1]}:$HTTP_PORT/admin/status
  drain n4:  $KASKADE drain --node n4 --etcd $ETCD_URL
  stop:      Ctrl-C here (or: kill $$)

EOF

# ---- run until stopped -------------------------------------------------------------------------

while true; do
    sleep 1 &
    wait $! || true
    if ! alive "${PID[etcd]}"; then
        show_log "$TMP/logs/etcd.log"
        die "etcd exited"
    fi
    running=0
    for n in "${NODES[@]}"; do
        pid=${PID[$n]:-}
        [[ -n $pid ]] || continue
        if alive "$pid"; then
            running=$((running + 1))
        else
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            if grep -q 'drain complete\|drain deadline reached' "$TMP/logs/$n.log"; then
                say "$n drained and exited (status $rc)"
            else
                say "$n exited (status $rc)"
                show_log "$TMP/logs/$n.log"
            fi
            PID[$n]=""
        fi
    done
    if ((running == 0)); then
        say "no node left running"
        exit 0
    fi
done
