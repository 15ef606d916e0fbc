# Relay vs mesh mode; sourced by bench.sh (it uses bench.sh's process
# helpers, PID table and record), never run alone.
#
# scale_mesh_nN / scale_relay_nN: N servers (2, 4; 8 unless --quick;
#   SWITCHBOARD_MESH_SIZES="2 4 8" to choose) either all
#   linked to one relay or linked to each other (--mesh, no relay), with
#   the same load: N generators in a ring (server k's senders chat to
#   server k+1's recipients; with 2 servers, one generator s1 -> s2),
#   P=50 pairs split over them, W=32, 64-byte content, every message
#   verified. Throughput is the sum over the generators; p50 and p99 the
#   median of theirs and the worst. The two clusters of one size run
#   one after the other in each run (their own Redis, so a mesh never
#   sees the relay cluster's servers), so the ratio comes from one run
#   on one machine. CPU: user+system time of every switchboard process
#   (servers, and the relay) per 1,000 messages under load, and its share
#   of one core over MB_IDLE_SECS idle seconds before the load.

MB_IDLE_SECS=3
MB_REDIS_PORT="$(free_port)"
MB_REDIS_URL="redis://127.0.0.1:$MB_REDIS_PORT"

mb_server() { # name links... -> PORT_<name>
    local name="$1" port grpc
    shift
    port="$(free_port)"
    grpc="$(free_port)"
    RUST_LOG=warn "$BIN/switchboard-server" --id "$name" --listen "127.0.0.1:$port" \
        --grpc-listen "127.0.0.1:$grpc" "$@" \
        --redis-url "$MB_REDIS_URL" "${SERVER_FLAGS[@]}" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    printf -v "PORT_$name" '%s' "$port"
    wait_port "$port" "$name"
}

# Starts N servers <prefix>1..N, through one relay (mode relay) or
# meshed; returns once chats cross the ring.
mb_cluster() { # prefix mode N
    local prefix="$1" mode="$2" n="$3" k links=(--mesh)
    if [ "$mode" = relay ]; then
        local rport
        rport="$(free_port)"
        RUST_LOG=warn "$BIN/switchboard-relay" --id "${prefix}r" --grpc-listen "127.0.0.1:$rport" \
            --redis-url "$MB_REDIS_URL" >>"$WORK/${prefix}r.log" 2>&1 &
        PID[${prefix}r]=$!
        wait_port "$rport" "${prefix}r"
        links=(--relay "http://127.0.0.1:$rport")
    fi
    for ((k = 1; k <= n; k++)); do
        mb_server "$prefix$k" "${links[@]}"
    done
    for ((k = 1; k <= n; k++)); do
        local a="PORT_$prefix$k" b="PORT_$prefix$((k % n + 1))"
        wait_chat "${!a}" "${!b}" 30
    done
}

mb_stop_cluster() { # prefix N
    local k
    for ((k = 1; k <= $2; k++)); do stop "$1$k"; done
    stop "$1r"
}

# CPU seconds (user + system) so far of the cluster's processes.
mb_cpu() { # prefix N
    local k pids=()
    for ((k = 1; k <= $2; k++)); do pids+=("${PID[$1$k]}"); done
    [ -n "${PID[$1r]:-}" ] && pids+=("${PID[$1r]}")
    python3 - "${pids[@]}" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total += int(fields[11]) + int(fields[12])
print(total / tick)
PY
}

# One measurement: the ring of generators over the cluster, summed.
mb_measure() { # key run prefix N
    local key="$1" run="$2" prefix="$3" n="$4" k gens pairs outs=() pids=()
    gens=$(( n == 2 ? 1 : n ))
    pairs=$(( 50 / gens ))
    # What the cluster costs doing nothing: heartbeats, registry reads,
    # health checks (a mesh: every server checks every other).
    local idle0 idle1 cpu0
    idle0="$(mb_cpu "$prefix" "$n")"
    sleep "$MB_IDLE_SECS"
    idle1="$(mb_cpu "$prefix" "$n")"
    cpu0="$(mb_cpu "$prefix" "$n")"
    for ((k = 1; k <= gens; k++)); do
        local a="PORT_$prefix$k" b="PORT_$prefix$((k % n + 1))"
        "$LOAD" --quiet pairs --a "127.0.0.1:${!a}" --b "127.0.0.1:${!b}" --pairs "$pairs" \
            --messages "$BIG_M" --window 32 --size 64 >"$WORK/$key.$run.$k.out" 2>>"$WORK/load.log" &
        pids+=($!)
        outs+=("$WORK/$key.$run.$k.out")
    done
    for k in "${pids[@]}"; do wait "$k" || true; done
    local cpu1
    cpu1="$(mb_cpu "$prefix" "$n")"
    local json
    json="$(python3 - "$n" "$cpu0" "$cpu1" "$idle0" "$idle1" "$MB_IDLE_SECS" "${outs[@]}" <<'PY'
import json, statistics, sys
n, cpu0, cpu1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
idle0, idle1, idle_secs, files = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7:]
rs = []
for f in files:
    try:
        rs.append(json.load(open(f)))
    except Exception:
        rs.append({"ok": False})
ok = all(r.get("ok") for r in rs)
sent = sum(r.get("sent", 0) for r in rs)
print(json.dumps({
    "mode": "pairs", "servers": n, "generators": len(rs),
    "msgs_per_sec": sum(r.get("msgs_per_sec", 0) for r in rs),
    "e2e_p50_ms": statistics.median(r.get("e2e_p50_ms", 0) for r in rs),
    "e2e_p99_ms": max(r.get("e2e_p99_ms", 0) for r in rs),
    "ack_p50_ms": statistics.median(r.get("ack_p50_ms", 0) for r in rs),
    "cpu_ms_per_1k": round((cpu1 - cpu0) * 1e6 / max(sent, 1), 1),
    "idle_cpu_pct": round((idle1 - idle0) * 100 / idle_secs, 2),
    "sent": sent, "ok": ok}))
PY
)"
    record "$key" "$run" "$n servers ($3 cluster): $gens switchboard-load pairs generator(s) in a ring, --pairs $pairs each --messages $BIG_M --window 32 --size 64" "$json"
    show "$key" "$run" "$json"
}

mesh_bench() {
    local sizes n i default="2 4 8"
    [ "$MODE" = quick ] && default="2 4"
    read -r -a sizes <<<"${SWITCHBOARD_MESH_SIZES:-$default}"
    start_redis "$MB_REDIS_PORT" mbredis
    for n in "${sizes[@]}"; do
        log "relay vs mesh with $n servers (P=50 split over a ring of generators, W=32, 64 B)"
        for ((i = 1; i <= RUNS; i++)); do
            mb_cluster "r$n" relay "$n"
            mb_measure "scale_relay_n$n" "$i" "r$n" "$n"
            mb_stop_cluster "r$n" "$n"
            mb_cluster "m$n" mesh "$n"
            mb_measure "scale_mesh_n$n" "$i" "m$n" "$n"
            mb_stop_cluster "m$n" "$n"
        done
    done
    stop mbredis
}
