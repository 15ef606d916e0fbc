# The NATS baseline; sourced by bench.sh (it uses bench.sh's process
# helpers, PID table and measure), never run alone.
#
# A 2-node NATS cluster (Debian's nats-server: two processes on free
# 127.0.0.1 ports, routed to each other; core NATS, no JetStream) runs
# beside the main servers s1/s2, and `switchboard-load pairs` drives both
# with the same workload (`--nats` for NATS: see its --help for the
# subjects and what a chat's outcome is there), alternating run by run,
# so that each ratio comes from one run on one machine. Every workload
# sends both ways (each pair's two users send to each other), 64 B:
#
#   <system>_both_p50_w32   P=50,  M=$BIG_M,  W=32
#   <system>_both_p200_w8   P=200, M=$WIDE_M, W=8
#   <system>_both_p50_w1    P=50,  M=$LAT_M,  W=1 (the latency target)
#
# Systems are "key-prefix|port A|port B|extra pairs flags" lines in
# NB_SYSTEMS: `cross` (switchboard through the relay), `mesh` (two
# switchboard servers in mesh mode, on their own Redis) and `nats`;
# bench_report.py shows each against NATS.

NATS_SERVER="$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)"
NB_SYSTEMS=()

nb_node() { # name client-port cluster-port other-node's-cluster-port
    "$NATS_SERVER" -a 127.0.0.1 -p "$2" -n "$1" --cluster_name switchboard-bench \
        --cluster "nats://127.0.0.1:$3" --routes "nats://127.0.0.1:$4" \
        >"$WORK/$1.log" 2>&1 &
    PID[$1]=$!
    PORT_NAME[$2]="\$${1^^}"
    wait_port "$2" "$1"
}

# Starts nats1 and nats2 (-> NATS_PORT_1, NATS_PORT_2); returns once a chat
# crosses the route both ways.
nb_cluster() {
    [ -x "$NATS_SERVER" ] || die "nats-server missing: run scripts/setup.sh"
    local c1 c2
    NATS_PORT_1="$(free_port)"
    NATS_PORT_2="$(free_port)"
    c1="$(free_port)"
    c2="$(free_port)"
    nb_node nats1 "$NATS_PORT_1" "$c1" "$c2"
    nb_node nats2 "$NATS_PORT_2" "$c2" "$c1"
    # The load tool waits (up to the timeout) until each server knows the
    # other's subscriptions, i.e. until the route is up.
    "$LOAD" --quiet pairs --nats --a "127.0.0.1:$NATS_PORT_1" --b "127.0.0.1:$NATS_PORT_2" \
        --pairs 1 --messages 1 --window 1 --both-ways --outcome-timeout-secs 30 \
        >/dev/null 2>>"$WORK/load.log" ||
        die "no chat crossed the NATS cluster (logs: $WORK/nats1.log, $WORK/nats2.log, $WORK/load.log)"
}

# One workload on every system of NB_SYSTEMS, RUNS times; the order of the
# systems turns round every run so that none always runs first.
# (Names start with nb_: bash functions see their callers' locals, and
# measure's loops assign `name`.)
nb_workload() { # workload P M W
    local nb_wl="$1" nb_p="$2" nb_m="$3" nb_w="$4" nb_i nb_k nb_n="${#NB_SYSTEMS[@]}"
    for ((nb_i = 1; nb_i <= RUNS; nb_i++)); do
        for ((nb_k = 0; nb_k < nb_n; nb_k++)); do
            local nb_sys nb_a nb_b nb_extra
            IFS='|' read -r nb_sys nb_a nb_b nb_extra <<<"${NB_SYSTEMS[$(((nb_k + nb_i - 1) % nb_n))]}"
            # shellcheck disable=SC2086 # nb_extra: flags, split on purpose
            measure "${nb_sys}_both_$nb_wl" "$nb_i" pairs --a "127.0.0.1:$nb_a" --b "127.0.0.1:$nb_b" \
                --pairs "$nb_p" --messages "$nb_m" --window "$nb_w" --size 64 --both-ways $nb_extra
        done
    done
}

nats_bench() {
    log "against NATS: a 2-node NATS cluster and two mesh-mode servers beside s1/s2, the same workloads both ways, alternating"
    nb_cluster
    # Two --mesh servers on their own Redis (bench_mesh.sh's helpers).
    start_redis "$MB_REDIS_PORT" mbredis
    mb_cluster nm mesh 2
    NB_SYSTEMS+=("cross|$PORT_s1|$PORT_s2|" "mesh|$PORT_nm1|$PORT_nm2|"
        "nats|$NATS_PORT_1|$NATS_PORT_2|--nats")
    log "nats1 :$NATS_PORT_1, nats2 :$NATS_PORT_2 ($("$NATS_SERVER" --version)); mesh nm1 :$PORT_nm1, nm2 :$PORT_nm2"
    nb_workload p50_w32 50 "$BIG_M" 32
    nb_workload p200_w8 200 "$WIDE_M" 8
    nb_workload p50_w1 50 "$LAT_M" 1
    stop nats1
    stop nats2
    mb_stop_cluster nm 2
    stop mbredis
}
