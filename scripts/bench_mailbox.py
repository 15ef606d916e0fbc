#!/usr/bin/env python3
"""The offline mailbox, measured from outside (run by scripts/bench_mailbox.sh).

Storing: SENDERS users on server A each send MESSAGES chats to their own
offline recipient, pipelined (up to WINDOW awaiting their outcome per
sender); stored msgs/s = chats acked `stored` / time from the first send
to the last ack. Draining: each recipient then logs in on server B, one at
a time, and reads its mailbox; drained msgs/s per login = MESSAGES / time
from sending the login to the last stored message. Every message is
checked: ids in the order they were acked, each once, `"stored":true`.
Prints one JSON object.
"""
import argparse
import asyncio
import json
import statistics
import time


async def connect(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    return reader, writer


async def send(writer, obj):
    writer.write((json.dumps(obj) + "\n").encode())
    await writer.drain()


async def recv(reader, timeout=30):
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise ConnectionError("closed by the server")
    return json.loads(line)


async def login(port, name):
    reader, writer = await connect(port)
    await send(writer, {"cmd": "login", "name": name})
    reply = await recv(reader)
    assert reply.get("event") == "login", reply
    return reader, writer


async def store(port, sender, recipient, n, window, size):
    """Sends n chats to recipient; returns the ids acked `stored`, in order."""
    reader, writer = await login(port, sender)
    content = "x" * size
    acked = {}
    sent = 0
    while len(acked) < n:
        while sent < n and sent - len(acked) < window:
            await send(writer, {"cmd": "chat", "recv": recipient, "content": f"{sent:06} {content}", "ref": sent})
            sent += 1
        reply = await recv(reader)
        assert reply.get("status") == "stored", f"{sender}: {reply}"
        acked[reply["ref"]] = reply["id"]
    writer.close()
    return [acked[i] for i in range(n)]


async def drain(port, name, ids):
    """Logs in as name; seconds until its whole mailbox arrived (checked)."""
    start = time.perf_counter()
    reader, writer = await login(port, name)
    got = []
    while len(got) < len(ids):
        m = await recv(reader)
        assert m.get("event") == "message" and m.get("stored") is True, m
        got.append(m["id"])
    elapsed = time.perf_counter() - start
    writer.close()
    assert got == ids, f"{name}: stored messages out of order or missing"
    return elapsed


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=int, required=True, help="client port of server A (senders)")
    ap.add_argument("--b", type=int, required=True, help="client port of server B (recipients)")
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--messages", type=int, default=1000, help="per sender: each recipient's mailbox")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tag", default=str(int(time.time())))
    a = ap.parse_args()
    pairs = [(f"mbs-{a.tag}-{i}", f"mbr-{a.tag}-{i}") for i in range(a.senders)]
    start = time.perf_counter()
    stored = await asyncio.gather(*(store(a.a, s, r, a.messages, a.window, a.size) for s, r in pairs))
    store_secs = time.perf_counter() - start
    drains = [await drain(a.b, r, ids) for (_, r), ids in zip(pairs, stored)]
    total = a.senders * a.messages
    print(json.dumps({
        "mode": "mailbox",
        "senders": a.senders,
        "mailbox": a.messages,
        "stored": total,
        "stored_per_sec": round(total / store_secs),
        "drain_secs_p50": round(statistics.median(drains), 3),
        "drained_per_sec": round(a.messages / statistics.median(drains)),
        "drained_per_sec_min": round(a.messages / max(drains)),
        "ok": True,
    }))


if __name__ == "__main__":
    asyncio.run(main())
