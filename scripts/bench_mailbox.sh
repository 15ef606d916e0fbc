# The offline mailbox (--mailbox); sourced by bench.sh (it uses bench.sh's
# process helpers and record/show, and bench_relays.sh's rb_cluster),
# never run alone. Starts its own relay and two servers with --mailbox so
# it cannot disturb, or be disturbed by, the other measurements.
#
# mailbox: MB_SENDERS users on server A each send MB_MESSAGES chats
#   (64 B, up to 64 awaiting their outcome) to their own offline recipient:
#   stored msgs/s. Then each recipient logs in on server B, one after
#   another, and reads its mailbox of MB_MESSAGES (checked: every id once,
#   in order, "stored":true): drained msgs/s per login (median, and the
#   slowest). scripts/bench_mailbox.py is the client.

MB_MESSAGES=1000
if [ "$MODE" = quick ]; then MB_SENDERS=5; else MB_SENDERS=20; fi

mailbox_bench() {
    local i out saved=("${SERVER_FLAGS[@]}")
    log "offline mailbox ($MB_SENDERS senders x $MB_MESSAGES chats to offline users, then one login each)"
    SERVER_FLAGS+=(--mailbox --mailbox-max "$MB_MESSAGES")
    # Every chat to an offline user is a presence lookup at the relay (an
    # offline name has no route to cache), and the relay's lookup budget
    # (2,000/s per server by default) would answer most of this flood
    # `unavailable`: this measures the mailbox, not the budget.
    RB_RELAY_FLAGS=(--lookup-budget-per-sec 0)
    rb_cluster mb 1
    SERVER_FLAGS=("${saved[@]}")
    RB_RELAY_FLAGS=()
    local args=(--a "$PORT_mba" --b "$PORT_mbb" --senders "$MB_SENDERS" --messages "$MB_MESSAGES")
    for ((i = 1; i <= RUNS; i++)); do
        out="$(python3 "$ROOT/scripts/bench_mailbox.py" "${args[@]}" --tag "r$i" 2>>"$WORK/load.log")" \
            || out='{"mode":"failed","ok":false}'
        record mailbox "$i" "scripts/bench_mailbox.py --a \$A --b \$B --senders $MB_SENDERS --messages $MB_MESSAGES (servers with --mailbox --mailbox-max $MB_MESSAGES)" "$out"
        show mailbox "$i" "$out"
    done
    rb_stop_cluster mb 1
}
