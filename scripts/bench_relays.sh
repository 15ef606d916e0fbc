# Relay failover and the cost of a second relay; sourced by bench.sh (it
# uses bench.sh's process helpers, PID table and record/measure), never
# run alone. Every measurement starts its own relays and servers so it
# cannot disturb, or be disturbed by, the main pair s1/s2.
#
# failover_rN: N relays, two servers linked to all of them, paced verified
#   traffic both ways; `kill -9` of one relay mid-run (with one relay it is
#   started again on the same port at once, as Kubernetes would). Reports
#   the longest pause in deliveries, `unavailable` answers, chats re-sent
#   and copies dropped (server metrics), and the generator's verdict.
# relays_rN: cross-server throughput through servers linked to N relays;
#   the 1- and 2-relay clusters run side by side and alternate, so the
#   ratio comes from one run on one machine.

RB_PAIRS=8
RB_RATE=150 # chats a second per sender, both ways: 2,400 chats/s in all
RB_MESSAGES=900

RB_RELAY_FLAGS=()
rb_relay() { # name port (RB_RELAY_FLAGS: extra flags)
    RUST_LOG=warn "$BIN/switchboard-relay" --id "$1" --grpc-listen "127.0.0.1:$2" \
        --redis-url "$REDIS_URL" "${RB_RELAY_FLAGS[@]}" >>"$WORK/$1.log" 2>&1 &
    PID[$1]=$!
    wait_port "$2" "$1"
}

rb_server() { # name relay-urls -> PORT_<name>, METRICS_<name>
    local name="$1" port grpc metrics
    port="$(free_port)"
    grpc="$(free_port)"
    metrics="$(free_port)"
    RUST_LOG=warn "$BIN/switchboard-server" --id "$name" --listen "127.0.0.1:$port" \
        --grpc-listen "127.0.0.1:$grpc" --relay "$2" --metrics-listen "127.0.0.1:$metrics" \
        --redis-url "$REDIS_URL" "${SERVER_FLAGS[@]}" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    printf -v "PORT_$name" '%s' "$port"
    printf -v "METRICS_$name" '%s' "$metrics"
    PORT_NAME[$port]="\$${name^^}"
    wait_port "$port" "$name"
}

# Starts relays <prefix>1..<prefix>N and servers <prefix>a, <prefix>b
# linked to all of them; returns once chats cross both ways.
rb_cluster() { # prefix N
    local prefix="$1" n="$2" k port urls=()
    for ((k = 1; k <= n; k++)); do
        port="$(free_port)"
        printf -v "RPORT_$prefix$k" '%s' "$port"
        rb_relay "$prefix$k" "$port"
        urls+=("http://127.0.0.1:$port")
    done
    local list
    list="$(IFS=,; echo "${urls[*]}")"
    rb_server "${prefix}a" "$list"
    rb_server "${prefix}b" "$list"
    local pa="PORT_${prefix}a" pb="PORT_${prefix}b"
    wait_chat "${!pa}" "${!pb}" 30
    wait_chat "${!pb}" "${!pa}" 30
}

rb_stop_cluster() { # prefix N
    local k
    stop "$1a"
    stop "$1b"
    for ((k = 1; k <= $2; k++)); do stop "$1$k"; done
}

# The sum of one metric over the servers <prefix>a and <prefix>b.
rb_metric() { # prefix metric
    local pa="METRICS_$1a" pb="METRICS_$1b"
    python3 - "$2" "${!pa}" "${!pb}" <<'EOF'
import sys, urllib.request
metric, ports = sys.argv[1], sys.argv[2:]
total = 0.0
for port in ports:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total += sum(float(l.split()[1]) for l in text.splitlines() if l.split(" ")[0] == metric)
print(int(total))
EOF
}

rb_failover() { # relays run
    local n="$1" run="$2" prefix="f$1x$2" ready out
    rb_cluster "$prefix" "$n"
    local pa="PORT_${prefix}a" pb="PORT_${prefix}b" rport="RPORT_${prefix}1"
    ready="$WORK/$prefix.ready"
    local args=(pairs --a "127.0.0.1:${!pa}" --b "127.0.0.1:${!pb}" --both-ways
        --pairs "$RB_PAIRS" --messages "$RB_MESSAGES" --rate "$RB_RATE" --window 32
        --ready-file "$ready" --ready-after-outcomes 2400 --outcome-timeout-secs 20)
    "$LOAD" --quiet "${args[@]}" >"$WORK/$prefix.out" 2>>"$WORK/load.log" &
    local load=$!
    local deadline=$((SECONDS + 60))
    until [ -s "$ready" ]; do
        [ $SECONDS -lt $deadline ] || die "failover traffic did not start (see $WORK/load.log)"
        sleep 0.02
    done
    stop "${prefix}1" KILL
    [ "$n" = 1 ] && rb_relay "${prefix}1" "${!rport}"
    wait "$load" || true
    out="$(cat "$WORK/$prefix.out")"
    [ -n "$out" ] || out='{"mode":"failed","ok":false}'
    local resent dropped
    resent="$(rb_metric "$prefix" switchboard_forwards_resent_total)"
    dropped="$(rb_metric "$prefix" switchboard_duplicates_dropped_total)"
    rb_stop_cluster "$prefix" "$n"
    local json
    json="$(python3 - "$n" "$out" "$resent" "$dropped" <<'EOF'
import json, sys
n, raw, resent, dropped = sys.argv[1:]
r = json.loads(raw)
o = r.get("outcomes", {})
v = r.get("violations") or {}
print(json.dumps({"mode": "failover", "relays": int(n), "chats": r.get("sent", 0),
                  "delivered": o.get("delivered", 0), "unavailable": o.get("unavailable", 0),
                  "max_gap_ms": r.get("max_arrival_gap_ms"), "resent": int(resent),
                  "duplicates_dropped": int(dropped),
                  "violations": sum(x for x in v.values() if isinstance(x, int)),
                  "ok": bool(r.get("ok"))}))
EOF
)"
    local cmd="switchboard-load ${args[*]}"
    cmd="${cmd//127.0.0.1:${!pa}/127.0.0.1:\$A}"
    cmd="${cmd//127.0.0.1:${!pb}/127.0.0.1:\$B}"
    cmd="${cmd//$ready/READY}"
    local restart=""
    [ "$n" = 1 ] && restart=", then start it again on the same port"
    record "failover_r$n" "$run" "$n relay(s), servers A and B linked to each; $cmd; kill -9 one relay once READY appears$restart" "$json"
    show "failover_r$n" "$run" "$json"
}

relays_bench() {
    local i
    log "relay failover ($RB_PAIRS pairs both ways at $RB_RATE chats/s per sender; kill -9 one relay mid-run)"
    for ((i = 1; i <= RUNS; i++)); do
        rb_failover 1 "$i"
        rb_failover 2 "$i"
    done
    log "throughput through one relay and through two (P=50, W=32, cross-server, alternating)"
    rb_cluster one 1
    rb_cluster two 2
    for ((i = 1; i <= RUNS; i++)); do
        measure relays_r1 "$i" pairs --a "127.0.0.1:$PORT_onea" --b "127.0.0.1:$PORT_oneb" \
            --pairs 50 --messages "$BIG_M" --window 32 --size 64
        measure relays_r2 "$i" pairs --a "127.0.0.1:$PORT_twoa" --b "127.0.0.1:$PORT_twob" \
            --pairs 50 --messages "$BIG_M" --window 32 --size 64
    done
    rb_stop_cluster one 1
    rb_stop_cluster two 2
}
