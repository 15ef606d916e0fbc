#!/usr/bin/env python3
"""Turns scripts/bench.sh results (JSON lines) into docs/benchmarks.md and
the throughput-vs-window SVG plot. Standard library only; the SVG is
written by hand."""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
from collections import OrderedDict

TARGET_MSGS = 300_000
TARGET_P99_MS = 20.0
TARGET_W1_P50_MS = 0.5
TARGET_CONNS = 50_000
TARGET_KIB_PER_CONN = 8.0
TARGET_HELD_CONNS = 19_000
TARGET_HELD_KIB = 6
TARGET_LOGINS = 20_000
# Against NATS (scripts/bench_nats.sh): msgs/s of a switchboard path ÷ NATS's
# at the same workload, both ways; W=1 p50 of mesh mode ÷ NATS's at most.
TARGET_RELAY_VS_NATS = 0.5
TARGET_MESH_VS_NATS = 0.8
TARGET_W1_VS_NATS = 1.2


def sh(cmd, cwd=None):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return ""


def machine(root):
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    ram = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = sh("git rev-parse --short=12 HEAD", root)
    dirty = sh("git status --porcelain --untracked-files=no", root)
    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram": ram or "unknown",
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME") or platform.platform(),
        "commit": commit + (" (with uncommitted changes in the work tree)" if dirty else ""),
        "rustc": sh("rustc --version"),
        "redis": sh("redis-server --version"),
        "nats": nats_version(),
    }


def nats_version():
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    # It prints "nats-server: v2.9.10".
    return sh(f"{exe} --version").replace(": ", " ") if os.path.exists(exe) else ""


def load(path):
    by_key = OrderedDict()
    for line in open(path):
        line = line.strip()
        if line:
            rec = json.loads(line)
            by_key.setdefault(rec["key"], []).append(rec)
    return by_key


def med(recs, field):
    vals = [r["result"].get(field) for r in recs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 100:
        v = int(v)
    if isinstance(v, int) or (isinstance(v, float) and abs(v) >= 1000):
        return f"{v:,.0f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def all_ok(recs):
    return all(r["result"].get("ok") is True for r in recs)


def runs_list(recs, field, digits=2):
    return ", ".join(fmt(r["result"].get(field), digits) for r in recs)


def verdict(ok):
    return "**met**" if ok else "**not met**"


PAIRS = [
    ("cross_p50_w32", "cross-server", 50, 32),
    ("same_p50_w32", "same server", 50, 32),
    ("cross_p200_w8", "cross-server", 200, 8),
    ("same_p200_w8", "same server", 200, 8),
    ("cross_p50_w1", "cross-server", 50, 1),
    ("same_p50_w1", "same server", 50, 1),
]


# Workloads of scripts/bench_nats.sh: key suffix, P, W, M of the targets
# (None: the latency run's own M).
NATS_WORKLOADS = [
    ("p50_w32", 50, 32, 2000),
    ("p200_w8", 200, 8, 500),
    ("p50_w1", 50, 1, None),
]
# Key prefixes of the systems measured against NATS, and the msgs/s ratio
# each must reach. `mesh_*` keys appear once mesh mode is measured.
NATS_SYSTEMS = [
    ("cross", "switchboard, relay", TARGET_RELAY_VS_NATS),
    ("mesh", "switchboard, mesh", TARGET_MESH_VS_NATS),
    ("nats", "NATS (2-node cluster)", None),
]


def nats_ratio(get, system, workload, field):
    """Median of `system` ÷ median of NATS, and the ratio of each run pair."""
    mine, nats = get(f"{system}_both_{workload}"), get(f"nats_both_{workload}")
    a, n = med(mine, field), med(nats, field)
    if not a or not n:
        return None, []
    by_run = {r["run"]: r["result"].get(field) for r in nats}
    runs = [r["result"].get(field) / by_run[r["run"]] for r in mine
            if r["result"].get(field) and by_run.get(r["run"])]
    return a / n, runs


def m_note(recs, want):
    n = recs[0]["result"].get("messages") if recs else None
    return "" if want is None or n == want else f" (M={n}, not {want})"


def nats_targets(get):
    """The issue's targets against NATS: rows of the Targets table."""
    rows = []
    for workload, P, Wn, M in NATS_WORKLOADS[:2]:
        for system, name, target in NATS_SYSTEMS[:2]:
            ratio, _ = nats_ratio(get, system, workload, "msgs_per_sec")
            if ratio is None:
                continue
            recs = get(f"{system}_both_{workload}")
            rows.append(f"| {name.split(', ')[1]} path ≥ {target:g} × a 2-node NATS cluster, msgs/s at P={P}, M={M}, W={Wn}, "
                        f"64 B, both ways | {ratio:.2f} × ({fmt(med(recs, 'msgs_per_sec'))} vs "
                        f"{fmt(med(get(f'nats_both_{workload}'), 'msgs_per_sec'))} msgs/s){m_note(recs, M)} "
                        f"| {verdict(ratio >= target)} |")
    for system, name, _ in NATS_SYSTEMS[:2]:
        recs = get(f"{system}_both_p50_w32")
        p99 = med(recs, "e2e_p99_ms")
        if p99 is not None:
            rows.append(f"| e2e p99 ≤ {TARGET_P99_MS:g} ms, {name.split(', ')[1]} path, P=50, M=2000, W=32, 64 B, both ways "
                        f"| {fmt(p99, 3)} ms{m_note(recs, 2000)} | {verdict(p99 <= TARGET_P99_MS)} |")
    mesh, _ = nats_ratio(get, "mesh", "p50_w1", "e2e_p50_ms")
    relay, _ = nats_ratio(get, "cross", "p50_w1", "e2e_p50_ms")
    nats_p50 = med(get("nats_both_p50_w1"), "e2e_p50_ms")
    what = f"| W=1 e2e p50 ≤ {TARGET_W1_VS_NATS:g} × NATS's, mesh mode, cross-server, P=50, both ways "
    if mesh is not None:
        rows.append(what + f"| {mesh:.2f} × ({fmt(med(get('mesh_both_p50_w1'), 'e2e_p50_ms'), 3)} vs "
                    f"{fmt(nats_p50, 3)} ms) | {verdict(mesh <= TARGET_W1_VS_NATS)} |")
    elif relay is not None:
        rows.append(what + f"| no mesh results; the relay path: {relay:.2f} × "
                    f"({fmt(med(get('cross_both_p50_w1'), 'e2e_p50_ms'), 3)} vs {fmt(nats_p50, 3)} ms) | n/a |")
    return rows


def nats_section(get, version):
    """The "Against NATS" section: both sides of every workload, the ratios."""
    if not any(get(f"nats_both_{w}") for w, *_ in NATS_WORKLOADS):
        return []
    L = []
    p = L.append
    p("## Against NATS")
    p("")
    p(f"A 2-node NATS cluster ({version or 'nats-server'}: two processes on this machine, routed to "
      "each other; core NATS, no JetStream) ran beside the switchboard servers in the same run, and "
      "`switchboard-load pairs` drove both with the same workload, alternating run by run: P pairs "
      "whose two users send to each other (both ways), 64 B, senders on one server and recipients "
      "on the other, every message checked (exactly once, in order, intact). Over NATS user N "
      "subscribes to `u.N`, a chat goes to `u.RECIPIENT` with the reply subject `u.SENDER.SEQ`, and "
      "its outcome is the ack the recipient publishes to that reply subject when it reads the chat: "
      "core NATS has no delivery ack, and this is the fair counterpart of switchboard's `ack` "
      "`delivered` (it crosses the cluster back as switchboard's outcome crosses the relay back). W "
      "counts chats without that ack; *ack* is send → ack read. The NATS ack is the stronger promise "
      "(read by the recipient, not only queued for it) and costs NATS one message more per chat.")
    p("")
    p("| workload | system | msgs/s (median) | e2e p50 ms | e2e p90 ms | e2e p99 ms | e2e max ms | ack p50 ms | ok | msgs/s, every run |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for workload, P, Wn, _ in NATS_WORKLOADS:
        for system, name, _ in NATS_SYSTEMS:
            r = get(f"{system}_both_{workload}")
            if not r:
                continue
            p(f"| P={P}, M={r[0]['result'].get('messages')}, W={Wn} | {name} | {fmt(med(r, 'msgs_per_sec'))} "
              f"| {fmt(med(r, 'e2e_p50_ms'), 3)} | {fmt(med(r, 'e2e_p90_ms'), 3)} | {fmt(med(r, 'e2e_p99_ms'), 3)} "
              f"| {fmt(med(r, 'e2e_max_ms'), 3)} | {fmt(med(r, 'ack_p50_ms'), 3)} "
              f"| {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'msgs_per_sec')} |")
    p("")
    p("Ratios to NATS (median ÷ median; in brackets each run ÷ the NATS run of the same round). "
      f"Targets: relay ≥ {TARGET_RELAY_VS_NATS:g} ×, mesh ≥ {TARGET_MESH_VS_NATS:g} × NATS's msgs/s; "
      f"W=1 p50 of mesh mode ≤ {TARGET_W1_VS_NATS:g} × NATS's.")
    p("")
    p("| system | workload | msgs/s ÷ NATS | e2e p50 ÷ NATS | e2e p99 ÷ NATS |")
    p("|---|---|---|---|---|")
    for system, name, _ in NATS_SYSTEMS[:2]:
        for workload, P, Wn, _ in NATS_WORKLOADS:
            cells = []
            for field in ("msgs_per_sec", "e2e_p50_ms", "e2e_p99_ms"):
                ratio, runs = nats_ratio(get, system, workload, field)
                cells.append("n/a" if ratio is None else
                             f"{ratio:.2f} ({', '.join(f'{x:.2f}' for x in runs)})")
            if cells != ["n/a"] * 3:
                p(f"| {name} | P={P}, W={Wn} | " + " | ".join(cells) + " |")
    p("")
    return L


def svg_plot(sweep, path):
    """Two panels: msgs/s and e2e p99 (and p50) against W (log2 axis)."""
    ws = [w for w, _ in sweep]
    W, H = 920, 380
    pw, ph = 360, 260
    panels = [(70, 50), (540, 50)]

    def xs(i, x0):
        return x0 + (pw * i / (len(ws) - 1) if len(ws) > 1 else pw / 2)

    def nice_max(v):
        if v <= 0:
            return 1
        mag = 10 ** (len(str(int(v))) - 1)
        for m in (1, 2, 2.5, 5, 10):
            if v <= m * mag:
                return m * mag
        return 10 * mag

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
           'P=50 pairs, cross-server, 64 B: throughput and latency vs window W (median of runs; dots = runs)</text>']
    series = [
        ("delivered msgs/s", [[r["msgs_per_sec"] for r in recs] for _, recs in sweep], "#1f77b4", None),
        ("end-to-end latency (ms)", [[r["e2e_p99_ms"] for r in recs] for _, recs in sweep], "#d62728",
         [[r["e2e_p50_ms"] for r in recs] for _, recs in sweep]),
    ]
    for (x0, y0), (title, runs, color, second) in zip(panels, series):
        vals = [v for rs in runs for v in rs] + ([v for rs in second for v in rs] if second else [])
        top = nice_max(max(vals) if vals else 1)

        def ys(v):
            return y0 + ph - ph * v / top

        out.append(f'<text x="{x0 + pw / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        for k in range(6):
            v = top * k / 5
            y = ys(v)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#ddd"/>')
            label = f"{v:,.0f}" if top >= 10 else f"{v:.1f}"
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        for i, w in enumerate(ws):
            out.append(f'<text x="{xs(i, x0):.1f}" y="{y0 + ph + 18}" text-anchor="middle">{w}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 38}" text-anchor="middle">window W (chats in flight per sender)</text>')

        def line(runs_, col, dash=""):
            pts = [(xs(i, x0), ys(statistics.median(rs))) for i, rs in enumerate(runs_) if rs]
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{col}" stroke-width="2" {dash}/>')
            for i, rs in enumerate(runs_):
                for v in rs:
                    out.append(f'<circle cx="{xs(i, x0):.1f}" cy="{ys(v):.1f}" r="2.5" fill="{col}" fill-opacity="0.5"/>')

        line(runs, color)
        if second:
            line(second, "#ff7f0e", 'stroke-dasharray="5,3"')
            lx, ly = x0 + 10, y0 + 16
            out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{lx + 30}" y="{ly + 4}">p99</text>')
            out.append(f'<line x1="{lx}" y1="{ly + 16}" x2="{lx + 24}" y2="{ly + 16}" stroke="#ff7f0e" '
                       'stroke-width="2" stroke-dasharray="5,3"/>')
            out.append(f'<text x="{lx + 30}" y="{ly + 20}">p50</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out")
    ap.add_argument("--svg")
    ap.add_argument("--section", choices=["nats"],
                    help="print only this section (with its targets) to stdout, write nothing")
    ap.add_argument("--mode", default="default")
    ap.add_argument("--runs", default="3")
    ap.add_argument("--date", default="")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--fd-limit", default="")
    ap.add_argument("--conns-wanted", type=int, default=0)
    ap.add_argument("--conns", type=int, default=0)
    ap.add_argument("--root", default=".")
    ap.add_argument("--server-flags", default="")
    a = ap.parse_args()

    res = load(a.results)
    get = lambda k: res.get(k, [])  # noqa: E731
    if a.section == "nats":
        print("\n".join(["| target | measured (median) | verdict |", "|---|---|---|"] + nats_targets(get)
                        + [""] + nats_section(get, nats_version())))
        return
    if not a.out or not a.svg:
        ap.error("--out and --svg are needed to write the report")
    m = machine(a.root)
    sweep = [(int(k[len("sweep_w"):]), v) for k, v in res.items() if k.startswith("sweep_w")]
    sweep.sort()
    if sweep:
        svg_plot([(w, [r["result"] for r in recs]) for w, recs in sweep], a.svg)

    L = []
    p = L.append
    p("# Benchmarks")
    p("")
    p("Generated by `scripts/bench.sh" + ("" if a.mode == "default" else f" --{a.mode}") +
      f"` on {a.date} (measurements took {a.elapsed} s). Do not edit by hand: rerun the script.")
    p("")
    p(f"- **Machine:** {m['cpu']}, **{m['cores']} cores**, {m['ram']} RAM, Linux {m['kernel']} ({m['os']})")
    p(f"- **Code:** commit `{m['commit']}`, {m['rustc']}, release build; {m['redis']}"
      + (f"; {m['nats']}" if m["nats"] and get("nats_both_p50_w32") else ""))
    p("- **Everything on this one machine:** Redis, the relay, two message servers and the load "
      f"generator (`switchboard-load`, 2 tokio worker threads) all share the {m['cores']} cores, so "
      "every number here includes the generator's own CPU use, and nothing crosses a real network "
      "(loopback only).")
    p(f"- **Runs:** each measurement ran {a.runs} time(s); tables show the **median** of the runs "
      "(for latencies: the median of the runs' percentiles) and list every run.")
    p(f"- **Mode:** `{a.mode}`" + (" (smaller runs: a smoke test, not comparable with the targets)" if a.mode == "quick" else ""))
    p("- **Noise:** if other work ran on the machine at the same time (builds, tests), the numbers "
      "are lower and noisier than on a quiet machine.")
    p("")

    # ---------------------------------------------------------------- targets
    p("## Targets")
    p("")
    p("| target | measured (median) | verdict |")
    p("|---|---|---|")
    c = get("cross_p50_w32")
    if c:
        mps, p99 = med(c, "msgs_per_sec"), med(c, "e2e_p99_ms")
        ok = mps is not None and p99 is not None and mps >= TARGET_MSGS and p99 <= TARGET_P99_MS
        n = c[0]["result"].get("messages")
        note = "" if n == 2000 else f" (M={n}, not 2000)"
        p(f"| ≥ {TARGET_MSGS:,} msgs/s cross-server at P=50, M=2000, W=32, 64 B, with e2e p99 ≤ {TARGET_P99_MS:g} ms "
          f"| {fmt(mps)} msgs/s, p99 {fmt(p99)} ms{note} | {verdict(ok)} |")
    for key, where in (("cross_p50_w1", "cross-server"), ("same_p50_w1", "same server")):
        r = get(key)
        if r:
            v = med(r, "e2e_p50_ms")
            p(f"| W=1 end-to-end p50 < {TARGET_W1_P50_MS} ms ({where}, P=50) | {fmt(v, 3)} ms "
              f"| {verdict(v is not None and v < TARGET_W1_P50_MS)} |")
    r = get("conns")
    if r:
        opened, kib = med(r, "opened"), med(r, "rss_per_conn_kib")
        ok = opened is not None and kib is not None and opened >= TARGET_CONNS and kib <= TARGET_KIB_PER_CONN
        extra = ""
        if a.conns < TARGET_CONNS:
            extra = (f" (only {a.conns:,} tried: " + ("`--full` not used" if a.conns_wanted < TARGET_CONNS
                     else f"`ulimit -n` hard limit is {a.fd_limit}") + ")")
        p(f"| {TARGET_CONNS:,} connections per server at ≤ {TARGET_KIB_PER_CONN:g} KiB RSS each "
          f"| {fmt(opened)} held, {fmt(kib)} KiB/conn{extra} | {verdict(ok)} |")
        # Issue 11's memory target, sized to this machine's 20,000 open files.
        ok = opened is not None and kib is not None and opened >= TARGET_HELD_CONNS and kib <= TARGET_HELD_KIB
        p(f"| ≤ {TARGET_HELD_KIB:g} KiB RSS per held, logged-in connection at {TARGET_HELD_CONNS:,} connections "
          f"| {fmt(kib)} KiB/conn at {fmt(opened)} | {verdict(ok)} |")
    r = get("logins")
    if r:
        v = med(r, "logins_per_sec")
        p(f"| ≥ {TARGET_LOGINS:,} logins/s | {fmt(v)} login+logout cycles/s | {verdict(v is not None and v >= TARGET_LOGINS)} |")
    for row in nats_targets(get):
        p(row)
    p("")

    # ---------------------------------------------------------------- pairs
    p("## Throughput and latency")
    p("")
    p("P pairs of users; each sender sends M chats of 64 bytes to its partner with at most W "
      "awaiting their outcome. *msgs/s* = messages received by recipients / time from the first "
      "send to the last receive. *e2e* = send → the recipient reads it; *ack* = send → the sender "
      "reads its `ack`. Every message is checked: exactly once, in order, intact; every chat must "
      "get an outcome (*ok*).")
    p("")
    p("| scenario | P | M | W | msgs/s (median) | e2e p50 ms | e2e p99 ms | e2e max ms | ack p50 ms | ack p99 ms | ok | msgs/s, every run |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, where, P, Wn in PAIRS:
        r = get(key)
        if not r:
            continue
        res0 = r[0]["result"]
        p(f"| {where} | {P} | {res0.get('messages')} | {Wn} | {fmt(med(r, 'msgs_per_sec'))} "
          f"| {fmt(med(r, 'e2e_p50_ms'), 3)} | {fmt(med(r, 'e2e_p99_ms'), 3)} | {fmt(med(r, 'e2e_max_ms'), 3)} "
          f"| {fmt(med(r, 'ack_p50_ms'), 3)} | {fmt(med(r, 'ack_p99_ms'), 3)} "
          f"| {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'msgs_per_sec')} |")
    p("")
    bad = [(k, rr["run"], rr["result"]) for k, recs in res.items() for rr in recs
           if rr["result"].get("mode") == "pairs" and not rr["result"].get("ok")]
    if bad:
        p("**Runs with violations or errors:**")
        p("")
        for k, run, rr in bad:
            p(f"- `{k}` run {run}: outcomes {json.dumps(rr.get('outcomes'))}, violations "
              f"{json.dumps({x: y for x, y in (rr.get('violations') or {}).items() if y})}")
        p("")
    nd = [(k, rr["run"], rr["result"]) for k, recs in res.items() for rr in recs
          if rr["result"].get("mode") == "pairs"
          and any(v for c_, v in (rr["result"].get("outcomes") or {}).items() if c_ != "delivered")]
    if nd:
        p("Runs where some chats were not delivered (counted, not violations): " +
          "; ".join(f"`{k}` run {run}: {json.dumps(rr['outcomes'])}" for k, run, rr in nd))
        p("")

    # ---------------------------------------------------------------- NATS
    for line in nats_section(get, m["nats"]):
        p(line)

    # ---------------------------------------------------------------- sweep
    if sweep:
        p("## Throughput and latency against the window")
        p("")
        p(f"P=50, cross-server, M={sweep[0][1][0]['result'].get('messages')}, 64 B.")
        p("")
        p("![throughput and p99 against W](img/throughput-vs-window.svg)")
        p("")
        p("| W | msgs/s (median) | e2e p50 ms | e2e p99 ms | ack p50 ms | ok | msgs/s, every run |")
        p("|---|---|---|---|---|---|---|")
        for w, r in sweep:
            p(f"| {w} | {fmt(med(r, 'msgs_per_sec'))} | {fmt(med(r, 'e2e_p50_ms'), 3)} | {fmt(med(r, 'e2e_p99_ms'), 3)} "
              f"| {fmt(med(r, 'ack_p50_ms'), 3)} | {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'msgs_per_sec')} |")
        p("")

    # ---------------------------------------------------------------- the rest
    r = get("logins")
    if r:
        r0 = r[0]["result"]
        p("## Logins")
        p("")
        p(f"{r0.get('count'):,} login + logout cycles over {r0.get('concurrency')} connections to one server "
          "(each login and each logout is a Redis script call).")
        p("")
        p("| cycles/s (median) | login p50 ms | login p99 ms | ok | every run |")
        p("|---|---|---|---|---|")
        p(f"| {fmt(med(r, 'logins_per_sec'))} | {fmt(med(r, 'login_p50_ms'), 3)} | {fmt(med(r, 'login_p99_ms'), 3)} "
          f"| {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'logins_per_sec')} |")
        p("")
    r = get("conns")
    if r:
        r0 = r[0]["result"]
        p("## Held connections")
        p("")
        p(f"A fresh server per run; {r0.get('count'):,} connections from {r0.get('sources')} source addresses "
          f"(127.0.0.1-127.0.0.8), each logged in, held 2 s; then {r0.get('check_chats')} chats between random "
          "held connections must all be acked `delivered` and arrive. RSS per connection = (server VmRSS after − "
          "before) / connections. `ulimit -n` for the generator and the server: " + f"{a.fd_limit}.")
        if a.conns < a.conns_wanted:
            p("")
            p(f"**{a.conns_wanted:,} were wanted but the hard limit on open files ({a.fd_limit}) allows only "
              f"{a.conns:,}** per process here (the generator and the server each need one descriptor per "
              "connection). Raise it (`ulimit -Hn`, `LimitNOFILE=`, container `--ulimit nofile=`) to measure more.")
        p("")
        p("| connections | open + login s | conns/s | server RSS before → after KiB | KiB/conn (median) | generator RSS KiB | chats ok | every run KiB/conn |")
        p("|---|---|---|---|---|---|---|---|")
        p(f"| {fmt(med(r, 'opened'))} | {fmt(med(r, 'open_secs'), 3)} | {fmt(med(r, 'conns_per_sec'))} "
          f"| {fmt(med(r, 'server_rss_before_kib'))} → {fmt(med(r, 'server_rss_after_kib'))} "
          f"| {fmt(med(r, 'rss_per_conn_kib'))} | {fmt(med(r, 'loadgen_rss_kib'))} "
          f"| {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'rss_per_conn_kib')} |")
        p("")
    r = get("purge")
    rl = get("relink")
    if r or rl:
        p("## Failure recovery")
        p("")
        p("| what | median s | every run (s) | ok |")
        p("|---|---|---|---|")
        if r:
            u = r[0]["result"].get("users")
            p(f"| purge: `kill -9` a server holding {u:,} logged-in users → all their `sb:user:*` entries gone "
              f"from Redis (relay defaults: health check 1 s × 3 failures) | {fmt(med(r, 'purge_secs'), 3)} "
              f"| {runs_list(r, 'purge_secs', 3)} | {'yes' if all_ok(r) else '**NO**'} |")
        if rl:
            p(f"| re-link: `kill -9` the relay, start it again on the same port → a cross-server chat is "
              f"acked `delivered` again (from the restart) | {fmt(med(rl, 'relink_secs'), 3)} "
              f"| {runs_list(rl, 'relink_secs', 3)} | {'yes' if all_ok(rl) else '**NO**'} |")
            p(f"| re-link, counted from the kill | {fmt(med(rl, 'since_kill_secs'), 3)} "
              f"| {runs_list(rl, 'since_kill_secs', 3)} | |")
        p("")

    # ---------------------------------------------------------------- relays
    fo = [(n, get(f"failover_r{n}")) for n in (1, 2)]
    if any(r for _, r in fo):
        p("## Relay failover")
        p("")
        r0 = next(r for _, r in fo if r)[0]
        p("Two message servers linked to every relay, 8 pairs of users sending to each other at "
          "150 chats/s per sender (2,400 chats/s in all, every chat verified); about 1 s into the "
          "run one relay is killed with `kill -9`. With one relay it is started again on the same "
          "port at once (what Kubernetes does); with two the other relay carries on. *Pause* = "
          "the longest time between two deliveries anywhere in the run; *re-sent* and *copies "
          "dropped* are the servers' `switchboard_forwards_resent_total` and "
          "`switchboard_duplicates_dropped_total`.")
        p("")
        p("| relays | longest pause ms (median) | `unavailable` (median) | re-sent (median) | copies dropped (median) | delivered / chats, every run | ok | pause ms, every run |")
        p("|---|---|---|---|---|---|---|---|")
        for n, r in fo:
            if not r:
                continue
            every = ", ".join(f"{x['result'].get('delivered')}/{x['result'].get('chats')}" for x in r)
            p(f"| {n} | {fmt(med(r, 'max_gap_ms'), 1)} | {fmt(med(r, 'unavailable'))} | {fmt(med(r, 'resent'))} "
              f"| {fmt(med(r, 'duplicates_dropped'))} | {every} | {'yes' if all_ok(r) else '**NO**'} "
              f"| {runs_list(r, 'max_gap_ms', 1)} |")
        p("")
    r1, r2 = get("relays_r1"), get("relays_r2")
    if r1 and r2:
        p("## One relay or two")
        p("")
        p("Cross-server P=50, W=32, 64 B through two servers linked to one relay and two servers "
          "linked to two relays, both clusters up at once and measured alternately. On this "
          "machine every process shares the same cores, so a second relay can only help while a "
          "core is idle; the figure shows what spreading costs or gains here, not on a cluster.")
        p("")
        p("| relays | msgs/s (median) | e2e p50 ms | e2e p99 ms | ok | msgs/s, every run |")
        p("|---|---|---|---|---|---|")
        for n, r in ((1, r1), (2, r2)):
            p(f"| {n} | {fmt(med(r, 'msgs_per_sec'))} | {fmt(med(r, 'e2e_p50_ms'), 3)} | {fmt(med(r, 'e2e_p99_ms'), 3)} "
              f"| {'yes' if all_ok(r) else '**NO**'} | {runs_list(r, 'msgs_per_sec')} |")
        a1, a2 = med(r1, "msgs_per_sec"), med(r2, "msgs_per_sec")
        if a1 and a2:
            p("")
            p(f"Two relays / one relay: **{a2 / a1:.2f}×**.")
        p("")

    # ---------------------------------------------------------------- mailbox
    mb = get("mailbox")
    if mb:
        r0 = mb[0]["result"]
        p("## Offline mailbox")
        p("")
        p(f"Servers with `--mailbox`. {r0.get('senders')} users on server A each send "
          f"{r0.get('mailbox')} chats (64 B, up to 64 awaiting their outcome) to their own offline "
          "recipient: every chat goes to the relay, comes back `OFFLINE`, and the origin appends it "
          "to the recipient's Redis Stream (one script per message). Then each recipient logs in "
          f"on server B, one after another, and reads its mailbox of {r0.get('mailbox')}: the drain "
          "writes pages of 100 and removes each once written, at most one page per 10 ms per login. "
          "Every message is checked (each id once, in order, `\"stored\":true`).")
        p("")
        p("| measure | median | every run | ok |")
        p("|---|---|---|---|")
        p(f"| stored msgs/s (whole cluster) | {fmt(med(mb, 'stored_per_sec'))} | {runs_list(mb, 'stored_per_sec')} "
          f"| {'yes' if all_ok(mb) else '**NO**'} |")
        p(f"| drained msgs/s per login (mailbox of {r0.get('mailbox')}) | {fmt(med(mb, 'drained_per_sec'))} "
          f"| {runs_list(mb, 'drained_per_sec')} | |")
        p(f"| seconds from login to the last stored message | {fmt(med(mb, 'drain_secs_p50'), 3)} "
          f"| {runs_list(mb, 'drain_secs_p50', 3)} | |")
        p("")
    mesh_table(get, p)

    # ---------------------------------------------------------------- notes
    # Hand-written analysis (profiles, what stands in the way of the
    # targets) lives beside the report and is included verbatim.
    notes = os.path.join(a.root, "docs", "benchmarks-notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            p(f.read().rstrip())
        p("")

    # ---------------------------------------------------------------- commands
    p("## Exact commands")
    p("")
    p("Processes (ports are free ports chosen at run time; logs at `RUST_LOG=warn`):")
    p("")
    p("```sh")
    p("ulimit -n 1048576 || ulimit -n $(ulimit -Hn)")
    p("redis-server --port $REDIS --bind 127.0.0.1 --save '' --appendonly no")
    p("target/release/switchboard-relay --grpc-listen 127.0.0.1:$RELAY --redis-url redis://127.0.0.1:$REDIS")
    p(f"target/release/switchboard-server --id s1 --listen 127.0.0.1:$S1 --grpc-listen 127.0.0.1:$G1 "
      f"--relay http://127.0.0.1:$RELAY --redis-url redis://127.0.0.1:$REDIS {a.server_flags}")
    p("# s2 likewise; a fresh server per held-connections run and per purge run")
    if get("nats_both_p50_w32"):
        p("nats-server -a 127.0.0.1 -p $NATS1 -n nats1 --cluster_name switchboard-bench "
          "--cluster nats://127.0.0.1:$ROUTE1 --routes nats://127.0.0.1:$ROUTE2")
        p("# nats2 likewise, routed to nats1 (scripts/bench_nats.sh)")
    p("```")
    p("")
    p("Measurements (first run of each; every run used the same command):")
    p("")
    p("```sh")
    for k, recs in res.items():
        p(f"# {k}")
        p(recs[0]["cmd"])
    p("```")
    p("")
    p("`--rate-limit-per-sec 0` turns off the servers' per-connection request limit (default 1,000/s), "
      "which would otherwise cap every sender; `--max-connections` is raised for the held-connection test. "
      "Everything else is at its default.")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")


def mesh_table(get, p):
    """Relay vs mesh mode at each cluster size measured (scale_* keys of
    scripts/bench_mesh.sh)."""
    sizes = sorted({int(k.rsplit("_n", 1)[1]) for k in (f"scale_relay_n{n}" for n in range(2, 65)) if get(k)})
    if not sizes:
        return
    p("## Relay or mesh")
    p("")
    p("N servers linked through one relay, or to each other (`--mesh`), one cluster after the other "
      "in each run; P=50 pairs split over a ring of generators, W=32, 64 B. CPU: every switchboard "
      "process's user + system time per message; idle: share of one core with no traffic; "
      "link streams: the long-lived gRPC streams the cluster holds by design (relay mode: one per "
      "server; mesh: one per pair of servers, n(n-1)/2).")
    p("")
    p("| servers | mode | msgs/s (median) | e2e p50 ms | e2e p99 ms | CPU µs/msg | idle % core | link streams | ok | msgs/s, every run |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for mode in ("relay", "mesh"):
            r = get(f"scale_{mode}_n{n}")
            if not r:
                continue
            p(f"| {n} | {mode} | {fmt(med(r, 'msgs_per_sec'))} | {fmt(med(r, 'e2e_p50_ms'), 3)} "
              f"| {fmt(med(r, 'e2e_p99_ms'), 3)} | {fmt(med(r, 'cpu_ms_per_1k'), 3)} "
              f"| {fmt(med(r, 'idle_cpu_pct'), 3)} | {n if mode == 'relay' else n * (n - 1) // 2} "
              f"| {'yes' if all_ok(r) else '**NO**'} "
              f"| {runs_list(r, 'msgs_per_sec')} |")
    p("")


if __name__ == "__main__":
    main()
