"""RSS growth of a framegate per connection: N connections to URL, with or without
permessage-deflate, idle, then after one 4 KiB JSON message each way (an echo route).
docs/performance.md has the figures.

    python3 bench/deflate_memory.py ws://127.0.0.1:8080/echo PID 2000 on|off
"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

async def main(url, pid, n, compression):
    rows = [{"symbol": f"S{i % 50}", "price": i * 1.25, "side": "buy"} for i in range(120)]
    text = json.dumps(rows)[:4096]
    before = rss(pid)
    conns = []
    for i in range(0, n, 200):
        conns += await asyncio.gather(*[connect(url, compression=compression, max_size=None, ping_interval=None) for _ in range(min(200, n - i))])
    await asyncio.sleep(1)
    idle = rss(pid)
    agreed = conns[0].response.headers.get("Sec-WebSocket-Extensions", "none")
    async def one(ws):
        await ws.send(text); await ws.recv()
    await asyncio.gather(*[one(ws) for ws in conns])
    await asyncio.sleep(1)
    busy = rss(pid)
    print(f"{n} connections, extension {agreed!r}: idle {(idle - before) / n:.1f} KiB/conn, after one 4 KiB message each {(busy - before) / n:.1f} KiB/conn (RSS {before} -> {idle} -> {busy} KiB)")
    for ws in conns:
        await ws.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), None if sys.argv[4] == "off" else "deflate"))
