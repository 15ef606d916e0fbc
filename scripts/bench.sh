#!/usr/bin/env bash
# Benchmarks switchboard on this machine and writes docs/benchmarks.md and
# docs/img/throughput-vs-window.svg.
#
# Starts its own redis-server, relay and message servers (release builds,
# target/release unless --bin) on free 127.0.0.1 ports, drives them with
# switchboard-load (tools/load) from the same directory,
# and stops everything it started on exit. Everything runs on this one
# machine, generator included.
#
#   scripts/bench.sh            # default: 3 runs per measurement (~5-10 min)
#   scripts/bench.sh --quick    # smoke test: 1 run, smaller runs (< 2 min)
#   scripts/bench.sh --full     # default + up to 50,000 held connections
#   scripts/bench.sh --relays   # only: relay failover with one and two
#                               # relays, throughput through one vs two
#                               # (also part of every other run); prints
#                               # the figures, writes no report
#   scripts/bench.sh --mailbox  # only: the offline mailbox, stored msgs/s
#                               # and drained msgs/s per login (mailboxes of
#                               # 1,000); also part of every full run;
#                               # prints the figures, writes no report
#   scripts/bench.sh --mesh     # only: relay vs mesh mode at 2, 4 and 8
#                               # servers (2 and 4 with --quick), same
#                               # run; prints the figures, writes no report
#   scripts/bench.sh --redis-engines  # only: one Redis vs a 3-master Redis
#                               # Cluster in the same run (logins/s,
#                               # cross-server msgs/s, Redis operations per
#                               # login, chat and heartbeat); prints a table
#   scripts/bench.sh --nats     # only: against a 2-node NATS cluster, the
#                               # same workloads both ways, alternating
#                               # (also part of every other run); prints
#                               # the figures and ratios, writes no report
#
# Other options: --runs N, --no-build, --no-report (print only),
#   --out FILE (default docs/benchmarks.md), --keep (keep the work dir),
#   --bin DIR: take switchboard-server, switchboard-relay and
#   switchboard-load from DIR instead of target/release (for an A/B run
#   against another build, e.g. another worktree's target/release);
#   implies --no-build. The report still names this checkout's commit.
# Needs redis-server, redis-cli and nats-server (scripts/setup.sh installs
# them), python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
MODE=default
RELAYS_ONLY=0
MAILBOX_ONLY=0
MESH_ONLY=0
ENGINES=0
NATS_ONLY=0
RUNS=""
BUILD=1
REPORT=1
KEEP=0
OUT="$ROOT/docs/benchmarks.md"
SVG="$ROOT/docs/img/throughput-vs-window.svg"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --relays) RELAYS_ONLY=1; REPORT=0 ;;
        --mailbox) MAILBOX_ONLY=1; REPORT=0 ;;
        --mesh) MESH_ONLY=1; REPORT=0 ;;
        --redis-engines) ENGINES=1 ;;
        --nats) NATS_ONLY=1; REPORT=0 ;;
        --runs) RUNS="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --no-report) REPORT=0 ;;
        --out) OUT="$2"; shift ;;
        --keep) KEEP=1 ;;
        --bin)
            [ -d "${2:-}" ] || { echo "bench: --bin needs a directory" >&2; exit 2; }
            BIN="$(cd "$2" && pwd)"; BUILD=0; shift ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
LOAD="$BIN/switchboard-load"

# ------------------------------------------------------------ parameters
if [ "$MODE" = quick ]; then
    RUNS="${RUNS:-1}"
    BIG_M=1000        # messages per sender at P=50 (target: 2000)
    WIDE_M=250        # messages per sender at P=200 (target: 500)
    LAT_M=200         # W=1 latency
    SWEEP_M=500       # window sweep
    LOGINS=5000
    CONNS=2000
    PURGE_USERS=1000
    PURGE_RUNS=1
    RELINK_RUNS=1
    CPU_SECS=5        # paced run for the CPU cost per message
else
    RUNS="${RUNS:-3}"
    BIG_M=2000
    WIDE_M=500
    LAT_M=500
    SWEEP_M=1000
    LOGINS=20000
    CONNS=5000
    PURGE_USERS=1000
    PURGE_RUNS=3
    RELINK_RUNS=3
    CPU_SECS=15
fi
# The paced run for the CPU cost: 50 senders x CPU_RATE chats/s, cross-server.
CPU_RATE=400
WINDOWS=(1 2 4 8 16 32 64)
CONNS_WANTED=$CONNS
[ "$MODE" = full ] && CONNS_WANTED=50000
MAX_CONNECTIONS=60000
SOURCE_RANGE=127.0.0.1-127.0.0.8

log() { echo "bench: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v redis-server >/dev/null || die "redis-server missing: run scripts/setup.sh"
command -v redis-cli >/dev/null || die "redis-cli missing: run scripts/setup.sh"
command -v python3 >/dev/null || die "python3 missing"

# Every held connection costs a descriptor in the generator and another in
# the server; both inherit this limit.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT="$(ulimit -n)"
if [ "$FD_LIMIT" != unlimited ] && [ "$CONNS_WANTED" -gt $((FD_LIMIT - 200)) ]; then
    CONNS=$((FD_LIMIT - 200))
    log "ulimit -n is $FD_LIMIT (hard limit): holding $CONNS connections instead of $CONNS_WANTED"
else
    CONNS=$CONNS_WANTED
fi

WORK="$(mktemp -d /tmp/switchboard-bench.XXXXXX)"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
declare -A PID=()

cleanup() {
    local rc=$?
    for name in "${!PID[@]}"; do
        kill "${PID[$name]}" 2>/dev/null || true
    done
    for name in "${!PID[@]}"; do
        wait "${PID[$name]}" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        log "logs and raw results kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ processes
declare -A USED_PORT=()
declare -A PORT_NAME=() # port -> $NAME, for printing commands
free_port() {
    local p
    while :; do
        p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
        if [ -z "${USED_PORT[$p]:-}" ]; then
            USED_PORT[$p]=1
            echo "$p"
            return
        fi
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name [seconds]
    local deadline=$((SECONDS + ${3:-20}))
    until port_open "$1"; do
        [ $SECONDS -lt "$deadline" ] || die "$2 did not open port $1 (log: $WORK/$2.log)"
        kill -0 "${PID[$2]}" 2>/dev/null || die "$2 exited (log: $WORK/$2.log): $(tail -3 "$WORK/$2.log")"
        sleep 0.05
    done
}

REDIS_PORT="$(free_port)"
RELAY_PORT="$(free_port)"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

start_redis() { # [port name]: the main Redis unless given
    local port="${1:-$REDIS_PORT}" name="${2:-redis}"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    wait_port "$port" "$name"
}

start_relay() {
    RUST_LOG=warn "$BIN/switchboard-relay" --grpc-listen "127.0.0.1:$RELAY_PORT" \
        --redis-url "$REDIS_URL" >>"$WORK/relay.log" 2>&1 &
    PID[relay]=$!
    wait_port "$RELAY_PORT" relay
}

# Server flags: no per-connection request rate limit (a sender pushes
# thousands of chats per second), a connection cap above the largest test.
SERVER_FLAGS=(--max-connections "$MAX_CONNECTIONS" --rate-limit-per-sec 0)

start_server() { # name -> sets PORT_<name>
    local name="$1" port grpc
    port="$(free_port)"
    grpc="$(free_port)"
    RUST_LOG=warn "$BIN/switchboard-server" --id "$name" --listen "127.0.0.1:$port" \
        --grpc-listen "127.0.0.1:$grpc" --relay "http://127.0.0.1:$RELAY_PORT" \
        --redis-url "$REDIS_URL" "${SERVER_FLAGS[@]}" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    printf -v "PORT_$name" '%s' "$port"
    PORT_NAME[$port]="\$${name^^}"
    wait_port "$port" "$name"
}

stop() { # name [signal]
    local pid="${PID[$1]:-}"
    [ -n "$pid" ] || return 0
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$1]"
}

# One chat from a fresh user on $1 to a fresh user on $2; 0 if acked delivered.
probe() {
    local out
    out="$("$LOAD" --quiet pairs --a "127.0.0.1:$1" --b "127.0.0.1:$2" --pairs 1 \
        --messages 1 --window 1 --outcome-timeout-secs 5 2>/dev/null)" || return 1
    [[ "$out" == *'"delivered":1,'* ]]
}

wait_chat() { # portA portB seconds
    local deadline=$((SECONDS + $3))
    until probe "$1" "$2"; do
        [ $SECONDS -lt "$deadline" ] || die "no delivered chat 127.0.0.1:$1 -> 127.0.0.1:$2 within $3 s"
        sleep 0.1
    done
}

now_s() { date +%s.%N; }

# ------------------------------------------------------------ measurements
record() { # key run command-string json
    python3 - "$1" "$2" "$3" "$4" >>"$RESULTS" <<'EOF'
import json, sys
key, run, cmd, raw = sys.argv[1:]
print(json.dumps({"key": key, "run": int(run), "cmd": cmd, "result": json.loads(raw)}))
EOF
}

show() { # key run json
    python3 - "$@" <<'EOF'
import json, sys
key, run, raw = sys.argv[1:]
r = json.loads(raw)
m = r["mode"]
if m == "pairs":
    s = (f'{r["msgs_per_sec"]:>9.0f} msgs/s  e2e p50 {r["e2e_p50_ms"]} p99 {r["e2e_p99_ms"]} ms'
         f'  ack p50 {r["ack_p50_ms"]} ms  ok={r["ok"]}')
elif m == "logins":
    s = f'{r["logins_per_sec"]:>9.0f} logins/s  p50 {r["login_p50_ms"]} p99 {r["login_p99_ms"]} ms  ok={r["ok"]}'
elif m == "failover":
    s = (f'{r["relays"]} relay(s): longest pause {r["max_gap_ms"]} ms, {r["unavailable"]} unavailable, '
         f'{r["resent"]} re-sent, {r["duplicates_dropped"]} copies dropped, '
         f'{r["delivered"]}/{r["chats"]} delivered  ok={r["ok"]}')
elif m == "mailbox":
    s = (f'{r["stored_per_sec"]:>9.0f} stored msgs/s; drain of {r["mailbox"]}: {r["drained_per_sec"]} msgs/s '
         f'per login (p50 {r["drain_secs_p50"]} s, slowest {r["drained_per_sec_min"]} msgs/s)  ok={r["ok"]}')
elif m == "conns":
    s = (f'{r["opened"]} conns in {r["open_secs"]} s, {r["rss_per_conn_kib"]} KiB/conn, '
         f'checks {r["check_delivered"]}/{r["check_chats"]}  ok={r["ok"]}')
else:
    s = json.dumps(r)
print(f"  {key:<28} run {run}: {s}")
EOF
}

# Runs the generator, records and prints its summary; a failed check is
# kept in the report (ok=false) rather than aborting the whole benchmark.
measure() { # key run args...
    local key="$1" run="$2" out rc=0
    shift 2
    out="$("$LOAD" --quiet "$@" 2>>"$WORK/load.log")" || rc=$?
    if [ -z "$out" ]; then
        log "$key run $run: the generator failed (exit $rc); see $WORK/load.log"
        tail -5 "$WORK/load.log" >&2
        out='{"mode":"failed","ok":false}'
    fi
    [ $rc -eq 0 ] || log "$key run $run: exit $rc (violations or errors; see the JSON)"
    local cmd="switchboard-load $*" port
    for port in "${!PORT_NAME[@]}"; do
        cmd="${cmd//127.0.0.1:$port/127.0.0.1:${PORT_NAME[$port]}}"
    done
    for name in "${!PID[@]}"; do
        cmd="${cmd//--server-pid ${PID[$name]}/--server-pid \$${name^^}_PID}"
    done
    record "$key" "$run" "$cmd" "$out"
    show "$key" "$run" "$out"
}

pairs() { # key P M W same(0/1) [extra...]
    local key="$1" p="$2" m="$3" w="$4" same="$5" i
    shift 5
    local args=(pairs --a "127.0.0.1:$PORT_s1" --b "127.0.0.1:$PORT_s2" --pairs "$p"
        --messages "$m" --window "$w" --size 64 "$@")
    [ "$same" = 1 ] && args+=(--same-server)
    for ((i = 1; i <= RUNS; i++)); do
        measure "$key" "$i" "${args[@]}"
    done
}

# ------------------------------------------------------------ run
START_TS="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
T0=$SECONDS
if [ "$BUILD" = 1 ]; then
    log "building (cargo build --release --workspace --bins)"
    (cd "$ROOT" && cargo build --release --workspace --bins)
fi
for exe in switchboard-server switchboard-relay switchboard-load; do
    [ -x "$BIN/$exe" ] || die "$BIN/$exe missing: build first (or check --bin)"
done
log "binaries from $BIN"

if [ "$ENGINES" = 1 ]; then
    # shellcheck source=scripts/bench_engines.sh
    source "$ROOT/scripts/bench_engines.sh"
    engines_bench
    exit 0
fi

log "mode $MODE, $RUNS run(s) per measurement, work dir $WORK"
start_redis
# shellcheck source=scripts/bench_relays.sh
source "$ROOT/scripts/bench_relays.sh"
# shellcheck source=scripts/bench_nats.sh
source "$ROOT/scripts/bench_nats.sh"
if [ "$RELAYS_ONLY" = 1 ]; then
    relays_bench
    exit 0
fi
# shellcheck source=scripts/bench_mailbox.sh
source "$ROOT/scripts/bench_mailbox.sh"
if [ "$MAILBOX_ONLY" = 1 ]; then
    mailbox_bench
    exit 0
fi
# shellcheck source=scripts/bench_mesh.sh
source "$ROOT/scripts/bench_mesh.sh"
if [ "$MESH_ONLY" = 1 ]; then
    mesh_bench
    exit 0
fi
start_relay
start_server s1
start_server s2
log "redis :$REDIS_PORT, relay :$RELAY_PORT, s1 :$PORT_s1, s2 :$PORT_s2; waiting for a cross-server chat"
wait_chat "$PORT_s1" "$PORT_s2" 30
wait_chat "$PORT_s2" "$PORT_s1" 30
if [ "$NATS_ONLY" = 1 ]; then
    nats_bench
    python3 "$ROOT/scripts/bench_report.py" --results "$RESULTS" --section nats
    exit 0
fi

log "throughput and latency"
pairs cross_p50_w32 50 "$BIG_M" 32 0
pairs same_p50_w32 50 "$BIG_M" 32 1
pairs cross_p200_w8 200 "$WIDE_M" 8 0
pairs same_p200_w8 200 "$WIDE_M" 8 1
pairs cross_p50_w1 50 "$LAT_M" 1 0
pairs same_p50_w1 50 "$LAT_M" 1 1

nats_bench

log "window sweep (P=50, cross-server, M=$SWEEP_M)"
for w in "${WINDOWS[@]}"; do
    pairs "sweep_w$w" 50 "$SWEEP_M" "$w" 0
done

log "CPU per 10k msgs/s (P=50 x $CPU_RATE msgs/s, cross-server, ${CPU_SECS} s; /proc/PID/stat)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for ((i = 1; i <= RUNS; i++)); do
    declare -A before=()
    for name in relay s1 s2 redis; do before[$name]="$(cpu_ticks "${PID[$name]}")"; done
    messages=$((50 * CPU_RATE * CPU_SECS))
    "$LOAD" --quiet pairs --a "127.0.0.1:$PORT_s1" --b "127.0.0.1:$PORT_s2" --pairs 50 \
        --messages $((CPU_RATE * CPU_SECS)) --window 32 --size 64 --rate "$CPU_RATE" \
        >"$WORK/cpu$i.out" 2>>"$WORK/load.log" || log "cpu run $i: the generator reported a failure"
    used=()
    for name in relay s1 s2 redis; do used+=("$(($(cpu_ticks "${PID[$name]}") - before[$name]))"); done
    # Cores a process needs per 10,000 msgs/s: its CPU seconds per message x 10,000.
    json="$(python3 - "$(getconf CLK_TCK)" "$messages" "${used[@]}" <<'EOF'
import json, sys
hz, messages, *ticks = map(int, sys.argv[1:])
relay, origin, dest, redis = (round(t / hz / messages * 10000, 4) for t in ticks)
print(json.dumps({"mode": "cpu", "messages": messages, "relay_cores_per_10k": relay,
                  "origin_server_cores_per_10k": origin, "destination_server_cores_per_10k": dest,
                  "redis_cores_per_10k": redis, "ok": True}))
EOF
)"
    record cpu "$i" "switchboard-load pairs --pairs 50 --rate $CPU_RATE --messages $((CPU_RATE * CPU_SECS)) (cross-server); CPU of each process from /proc/PID/stat" "$json"
    show cpu "$i" "$json"
    unset before
done

log "logins"
for ((i = 1; i <= RUNS; i++)); do
    measure logins "$i" logins --server "127.0.0.1:$PORT_s1" --count "$LOGINS" --concurrency 64
done

log "held connections ($CONNS per server, fresh server each run)"
for ((i = 1; i <= RUNS; i++)); do
    start_server "conns$i"
    sleep 1 # let the fresh server settle before its baseline RSS
    port_var="PORT_conns$i"
    measure conns "$i" conns --server "127.0.0.1:${!port_var}" --count "$CONNS" \
        --source-ip-range "$SOURCE_RANGE" --server-pid "${PID[conns$i]}" --hold-secs 2
    stop "conns$i"
done

log "purge of a killed server ($PURGE_USERS users, kill -9)"
for ((i = 1; i <= PURGE_RUNS; i++)); do
    name="purge$i"
    start_server "$name"
    port_var="PORT_$name"
    prefix="purge$i-$RANDOM"
    "$LOAD" --quiet conns --server "127.0.0.1:${!port_var}" --count "$PURGE_USERS" \
        --prefix "$prefix" --hold-secs 3600 --check-chats 0 >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PID[${name}_load]=$!
    deadline=$((SECONDS + 60))
    until grep -qs "open and logged in" "$WORK/$name.err"; do
        [ $SECONDS -lt $deadline ] || die "purge users did not log in (see $WORK/$name.err)"
        sleep 0.1
    done
    keys=()
    for ((k = 0; k < PURGE_USERS; k++)); do keys+=("sb:user:{$prefix-$k}"); done
    present="$(redis-cli -p "$REDIS_PORT" exists "${keys[@]}")"
    [ "$present" = "$PURGE_USERS" ] || log "only $present/$PURGE_USERS entries present before the kill"
    t_kill="$(now_s)"
    stop "$name" KILL
    while :; do
        left="$(redis-cli -p "$REDIS_PORT" exists "${keys[@]}")"
        [ "$left" = 0 ] && break
        if python3 -c "import sys; sys.exit(0 if float('$(now_s)') - $t_kill > 60 else 1)"; then
            log "purge run $i: $left entries still present after 60 s"
            break
        fi
        sleep 0.05
    done
    t_gone="$(now_s)"
    stop "${name}_load"
    json="$(python3 -c "print('{\"mode\":\"purge\",\"users\":$PURGE_USERS,\"present_before\":$present,\"left\":$left,\"purge_secs\":%.3f,\"ok\":%s}' % ($t_gone - $t_kill, 'true' if $left == 0 else 'false'))")"
    record purge "$i" "kill -9 <server with $PURGE_USERS users>; poll redis-cli exists sb:user:{NAME} ... until 0" "$json"
    echo "  purge                        run $i: $(python3 -c "print('%.3f' % ($t_gone - $t_kill))") s until all $PURGE_USERS entries were gone"
done

log "relay restart (kill -9, restart on the same port, until a cross-server chat is acked)"
for ((i = 1; i <= RELINK_RUNS; i++)); do
    t_kill="$(now_s)"
    stop relay KILL
    t_start="$(now_s)"
    start_relay
    deadline=$((SECONDS + 60))
    ok=true
    until probe "$PORT_s1" "$PORT_s2"; do
        if [ $SECONDS -ge $deadline ]; then ok=false; break; fi
        sleep 0.02
    done
    t_ok="$(now_s)"
    json="$(python3 -c "print('{\"mode\":\"relink\",\"relink_secs\":%.3f,\"since_kill_secs\":%.3f,\"ok\":$ok}' % ($t_ok - $t_start, $t_ok - $t_kill))")"
    record relink "$i" "kill -9 relay; start relay on the same port; probe a cross-server chat every 20 ms until acked delivered" "$json"
    echo "  relink                       run $i: $(python3 -c "print('%.3f s after the restart (%.3f s after the kill)' % ($t_ok - $t_start, $t_ok - $t_kill))")"
    wait_chat "$PORT_s2" "$PORT_s1" 30
done

relays_bench
mailbox_bench
mesh_bench

ELAPSED=$((SECONDS - T0))
log "measurements done in ${ELAPSED} s"

if [ "$REPORT" = 1 ]; then
    mkdir -p "$(dirname "$OUT")" "$(dirname "$SVG")"
    python3 "$ROOT/scripts/bench_report.py" \
        --results "$RESULTS" --out "$OUT" --svg "$SVG" --mode "$MODE" --runs "$RUNS" \
        --date "$START_TS" --elapsed "$ELAPSED" --fd-limit "$FD_LIMIT" \
        --conns-wanted "$CONNS_WANTED" --conns "$CONNS" --root "$ROOT" \
        --server-flags "${SERVER_FLAGS[*]}"
    log "wrote $OUT and $SVG"
fi
cp "$RESULTS" "$WORK/../switchboard-bench-last.jsonl" 2>/dev/null || true
