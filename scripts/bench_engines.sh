# Sourced by scripts/bench.sh --redis-engines (uses its helpers: free_port,
# wait_port, start_relay, start_server, stop, wait_chat, record, log, die,
# PID, WORK, LOAD, RUNS, REDIS_URL). In one run, for one redis-server and
# for a 3-master Redis Cluster on loopback: logins/s and cross-server
# msgs/s (the same switchboard-load runs as the main benchmark), and the
# Redis operations behind them, counted by INFO commandstats on every
# node (reset before each measurement): per login+logout cycle, per
# cross-server chat, and per idle second (heartbeats, relay's registry
# reads). INFO commandstats counts the commands a script runs as well as
# the EVALSHA itself: "commands" are what Redis executes, "(scripts)" the
# EVALSHA calls among them. Prints a Markdown table of medians; writes no
# report.

ENGINE_LOGINS=${ENGINE_LOGINS:-10000}
ENGINE_P=50
ENGINE_M=1000
ENGINE_IDLE_SECS=10
REDIS_NODES=()

start_single() {
    local port
    port="$(free_port)"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$WORK/redis-single.log" 2>&1 &
    PID[redis]=$!
    wait_port "$port" redis
    REDIS_NODES=("$port")
    REDIS_URL="redis://127.0.0.1:$port"
}

# A port whose cluster bus port (+10000) is free too.
cluster_port() {
    local p
    while :; do
        p="$(free_port)"
        [ "$p" -le 55535 ] && ! port_open $((p + 10000)) && { echo "$p"; return; }
    done
}

start_cluster() {
    local i port hosts=()
    REDIS_NODES=()
    for i in 1 2 3; do
        port="$(cluster_port)"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --cluster-enabled yes --cluster-config-file "$WORK/nodes-$port.conf" \
            --cluster-node-timeout 2000 >"$WORK/redis-cluster$i.log" 2>&1 &
        PID[redis$i]=$!
        wait_port "$port" "redis$i"
        REDIS_NODES+=("$port")
        hosts+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes \
        >"$WORK/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed (see $WORK/cluster-create.log)"
    local deadline=$((SECONDS + 30))
    for port in "${REDIS_NODES[@]}"; do
        until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do
            [ $SECONDS -lt $deadline ] || die "cluster not ok within 30 s"
            sleep 0.1
        done
    done
    REDIS_URL="redis+cluster://$(IFS=,; echo "${hosts[*]}")"
}

reset_stats() {
    local port
    for port in "${REDIS_NODES[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
}

# {"COMMAND": calls, ...} summed over the nodes, without the benchmark's own
# CONFIG/INFO.
command_calls() {
    local port
    for port in "${REDIS_NODES[@]}"; do redis-cli -p "$port" info commandstats; done |
        python3 -c '
import json, re, sys
calls = {}
for line in sys.stdin:
    m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line.strip())
    if m and m.group(1) not in ("config", "info", "config|resetstat"):
        calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(2))
print(json.dumps(calls))'
}

# One engine: relay and two servers on it, RUNS runs of each measurement.
engine_runs() { # engine
    local engine="$1" i out calls t0 t1
    [ "$engine" = single ] && start_single || start_cluster
    start_relay
    start_server s1
    start_server s2
    wait_chat "$PORT_s1" "$PORT_s2" 30
    wait_chat "$PORT_s2" "$PORT_s1" 30
    log "$engine: $REDIS_URL"
    for ((i = 1; i <= RUNS; i++)); do
        reset_stats
        sleep "$ENGINE_IDLE_SECS"
        record "${engine}_idle" "$i" "idle ${ENGINE_IDLE_SECS} s, 2 servers + relay" \
            "{\"mode\":\"idle\",\"secs\":$ENGINE_IDLE_SECS,\"calls\":$(command_calls)}"

        reset_stats
        t0="$(now_s)"
        out="$("$LOAD" --quiet logins --server "127.0.0.1:$PORT_s1" --count "$ENGINE_LOGINS" \
            --concurrency 64 2>>"$WORK/load.log")" || log "$engine logins run $i: generator exit $?"
        t1="$(now_s)"
        calls="$(command_calls)"
        record "${engine}_logins" "$i" "switchboard-load logins --count $ENGINE_LOGINS --concurrency 64" \
            "{\"load\":$out,\"secs\":$(python3 -c "print($t1 - $t0)"),\"calls\":$calls}"

        reset_stats
        t0="$(now_s)"
        out="$("$LOAD" --quiet pairs --a "127.0.0.1:$PORT_s1" --b "127.0.0.1:$PORT_s2" \
            --pairs "$ENGINE_P" --messages "$ENGINE_M" --window 32 --size 64 \
            2>>"$WORK/load.log")" || log "$engine pairs run $i: generator exit $?"
        t1="$(now_s)"
        calls="$(command_calls)"
        record "${engine}_chats" "$i" "switchboard-load pairs --pairs $ENGINE_P --messages $ENGINE_M --window 32 --size 64" \
            "{\"load\":$out,\"secs\":$(python3 -c "print($t1 - $t0)"),\"calls\":$calls}"
        log "$engine run $i done"
    done
    for name in s1 s2 relay redis redis1 redis2 redis3; do stop "$name"; done
}

engines_bench() {
    log "redis engines: one Redis vs a 3-master cluster, $RUNS run(s) each, work dir $WORK"
    engine_runs single
    engine_runs cluster
    python3 - "$RESULTS" "$ENGINE_LOGINS" "$ENGINE_P" "$ENGINE_M" <<'EOF'
import json, statistics, sys
path, logins, p, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(path)]
def runs(key):
    return [r["result"] for r in rows if r["key"] == key]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
def total(calls):
    return sum(calls.values())
print()
print("| engine | logins/s | cross-server msgs/s | commands per login+logout (scripts) | commands per chat | commands per heartbeat (scripts) | idle commands/s (2 servers + relay) |")
print("|---|---:|---:|---:|---:|---:|---:|")
detail = []
for engine in ("single", "cluster"):
    idle = runs(f"{engine}_idle")
    idle_rate = med([total(r["calls"]) / r["secs"] for r in idle])
    # Inside the heartbeat script: HGET (the fence) and one HSET; nothing
    # else runs those while idle.
    beat = lambda r, c: r["calls"].get(c, 0) / r["secs"] / 2
    beats = med([beat(r, "evalsha") + beat(r, "hget") + beat(r, "hset") for r in idle])
    beat_scripts = med([beat(r, "evalsha") for r in idle])
    lg = runs(f"{engine}_logins")
    ch = runs(f"{engine}_chats")
    # Idle traffic during the run is subtracted; the pairs' own logins too.
    per_login = med([(total(r["calls"]) - idle_rate * r["secs"]) / logins for r in lg])
    login_scripts = med([r["calls"].get("evalsha", 0) / logins for r in lg])
    per_chat = med([(total(r["calls"]) - idle_rate * r["secs"] - 2 * p * per_login) / (p * m) for r in ch])
    print(f"| {engine} | {med([r['load']['logins_per_sec'] for r in lg]):,.0f} "
          f"| {med([r['load']['msgs_per_sec'] for r in ch]):,.0f} | {per_login:.1f} ({login_scripts:.1f}) "
          f"| {max(per_chat, 0):.3f} | {beats:.1f} ({beat_scripts:.1f}) | {idle_rate:.1f} |")
    for kind, rs, n in (("login+logout", lg, logins), ("chat", ch, p * m)):
        by = {}
        for r in rs:
            for c, k in r["calls"].items():
                by.setdefault(c, []).append(k / n)
        detail.append(f"{engine} per {kind}: " + ", ".join(f"{c} {med(v):.2f}" for c, v in sorted(by.items())))
    by = {}
    for r in idle:
        for c, k in r["calls"].items():
            by.setdefault(c, []).append(k / r["secs"])
    detail.append(f"{engine} idle per second: " + ", ".join(f"{c} {med(v):.2f}" for c, v in sorted(by.items())))
print()
for d in detail:
    print("- " + d)
EOF
}
