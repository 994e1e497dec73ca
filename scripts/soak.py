"""The soak's load and its checks (run by scripts/soak): one release framegate on 127.0.0.1 under a
mixed, moderate load for MINUTES, sampled once a minute.

Load: echo ping-pong (4 connections), ingest to a file sink (1), Hydra with explicit acks to a
file sink (2), NSDb live queries (2 subscribers, 1 inserter), connection churn on /echo (about
5 a second), a hot swap of the echo module every 10 s and a config reload every minute (a route
added or removed).

Samples: the proxy's RSS, open files and threads (from /proc) and its runtime's tasks (from /metrics)
once a minute; churn pauses for
the sample, so open files count the long-lived connections only.

Checks: RSS and open files flat after warm-up (the samples after it within 5 % of each other),
0 acknowledged records missing from the sinks' files, every echo answered with its own bytes,
every live-query record delivered to every subscriber, 0 closes nobody asked for.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import websockets

MINUTES = float(sys.argv[1])
BINARY, FILTERS, WORK = sys.argv[2], sys.argv[3], sys.argv[4]
PORT, ADMIN = 18480, 18481
URL = f"ws://127.0.0.1:{PORT}"
SWAP_EVERY, RELOAD_EVERY, SAMPLE_EVERY = 10.0, 60.0, 60.0
# Samples before this are warm-up: the first 5 minutes of an hour, a third of a short run.
WARM_UP = min(5.0, MINUTES / 3) * 60

counts = {
    "echo": 0, "echo_wrong": 0, "churn": 0, "ingest_sent": 0, "hydra_acked": 0, "hydra_failed": 0,
    "inserted": 0, "query_pushed": 0, "swaps": 0, "reloads": 0, "unexpected_closes": 0,
}
closes = []  # (what, why) of every close nobody asked for
hydra_acked_ids = set()
inserted_values = []  # (value, time inserted)
subscriber_seen = {}  # subscriber -> set of values, and when its subscription was answered
subscribed_at = {}
quiet = asyncio.Event()  # set while a sample is taken: churn waits
stop = asyncio.Event()


def config(extra_route: bool) -> str:
    extra = """
[routes.extra]
path = "/extra"
filters = [{ module = "echo" }]
""" if extra_route else ""
    return f"""# written by scripts/soak
[server]
listen = "127.0.0.1:{PORT}"
admin = "127.0.0.1:{ADMIN}"

[filters]
dir = "{WORK}/filters"

[sinks.ingest_file]
type = "file"
path = "{WORK}/ingest.jsonl"

[sinks.hydra_file]
type = "file"
path = "{WORK}/hydra.jsonl"

[sinks.nsdb]
type = "bus"
topic = "nsdb"

[routes.echo]
path = "/echo"
filters = [{{ module = "echo" }}]

[routes.ingest]
path = "/ingest"
sinks = ["ingest_file"]

[routes.hydra]
path = "/ws-ingest/{{ingestor}}"
sinks = ["hydra_file"]
filters = [{{ module = "hydra", config = {{ ingestors = {{ file_ingestor = {{ sink = "hydra_file" }} }} }} }}]

[routes.ws_stream]
path = "/ws-stream"
filters = [{{ module = "query", config = {{ mode = "stream", topic = "nsdb", min_refresh_period_ms = 100, refresh_period_ms = 100 }} }}]
max_meta_keys = 16384
max_meta_bytes = 67108864

[routes.ws_insert]
path = "/ws-insert"
sinks = ["nsdb"]
filters = [{{ module = "query", config = {{ mode = "insert", sink = "nsdb" }} }}]
{extra}"""


def write_atomically(path: str, data: bytes) -> None:
    """Written under a dotfile name and renamed: the proxy never reads half a file."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def unexpected(what: str, error: BaseException) -> None:
    if stop.is_set():
        return
    counts["unexpected_closes"] += 1
    closes.append((what, repr(error)[:200]))


async def long_lived(what: str, url: str, body) -> None:
    """Runs `body(ws)` on a connection until the soak ends; a close nobody asked for is counted
    and the connection made again."""
    while not stop.is_set():
        try:
            async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
                await body(ws)
                return
        except (websockets.ConnectionClosed, OSError) as error:
            unexpected(what, error)
            await asyncio.sleep(1)


async def paced(interval: float):
    """Yields until the soak ends, once per `interval` seconds."""
    next_at = time.monotonic()
    while not stop.is_set():
        yield
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def echo(n: int) -> None:
    async def body(ws):
        seq = 0
        async for _ in paced(0.005):
            seq += 1
            message = f"echo {n} {seq} " + "x" * (seq % 200)
            await ws.send(message)
            if await ws.recv() == message:
                counts["echo"] += 1
            else:
                counts["echo_wrong"] += 1
    await long_lived(f"echo {n}", f"{URL}/echo", body)


async def churn() -> None:
    async for _ in paced(0.2):
        await quiet.wait()
        try:
            async with websockets.connect(f"{URL}/echo", ping_interval=None) as ws:
                await ws.send("churn")
                if await ws.recv() == "churn":
                    counts["churn"] += 1
        except (websockets.ConnectionClosed, OSError) as error:
            unexpected("churn", error)


async def ingest() -> None:
    async def body(ws):
        async for _ in paced(0.01):
            counts["ingest_sent"] += 1
            await ws.send(json.dumps({"soak": counts["ingest_sent"]}))
    await long_lived("ingest", f"{URL}/ingest", body)


async def hydra(n: int) -> None:
    async def body(ws):
        await ws.send("-c SET hydra-ack = explicit")
        assert json.loads(await ws.recv())["status"] == 200
        seq = 0
        async for _ in paced(0.02):
            seq += 1
            request = f"h{n}_{seq}"
            await ws.send(f'-i {request} {{"token":"{request}x"}}')
            reply = json.loads(await ws.recv())
            if reply.get("requestId") == request and reply["status"]["code"] == 200:
                counts["hydra_acked"] += 1
                hydra_acked_ids.add(request)
            else:
                counts["hydra_failed"] += 1
    await long_lived(f"hydra {n}", f"{URL}/ws-ingest/file_ingestor", body)


QUERY = {"db": "db", "namespace": "soak", "metric": "soak", "queryString": "select * from soak"}


async def subscriber(n: int) -> None:
    async def body(ws):
        await ws.send(json.dumps(QUERY))
        seen = subscriber_seen.setdefault(n, set())
        first = json.loads(await ws.recv())
        assert "quid" in first, first
        subscribed_at.setdefault(n, time.monotonic())
        seen.update(r["value"] for r in first["records"])
        while not stop.is_set():
            push = json.loads(await ws.recv())
            counts["query_pushed"] += len(push.get("records", []))
            seen.update(r["value"] for r in push.get("records", []))
    await long_lived(f"subscriber {n}", f"{URL}/ws-stream", body)


async def inserter() -> None:
    async def body(ws):
        value = 0
        async for _ in paced(0.05):
            value += 1
            bit = {"timestamp": int(time.time() * 1000), "value": value, "dimensions": {"n": value % 7}, "tags": {}}
            await ws.send(json.dumps({"db": "db", "namespace": "soak", "metric": "soak", "bit": bit}))
            if json.loads(await ws.recv()) == {"inserted": 1}:
                counts["inserted"] += 1
                inserted_values.append((value, time.monotonic()))
    await long_lived("inserter", f"{URL}/ws-insert", body)


async def swapper() -> None:
    """Every SWAP_EVERY s a new version of the echo module: the same code with a custom section
    that changes (a valid module that is a different file)."""
    echo = open(os.path.join(FILTERS, "echo.wasm"), "rb").read()
    async for _ in paced(SWAP_EVERY):
        counts["swaps"] += 1
        name, payload = b"soak", str(counts["swaps"]).encode()
        section = bytes([len(name)]) + name + payload
        write_atomically(f"{WORK}/filters/echo.wasm", echo + bytes([0, len(section)]) + section)


async def reloader() -> None:
    extra, started = False, False
    async for _ in paced(RELOAD_EVERY):
        if not started:
            started = True  # the first tick is the start
            continue
        extra = not extra
        counts["reloads"] += 1
        write_atomically(f"{WORK}/framegate.toml", config(extra).encode())


def proc(pid: int) -> dict:
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))
    return {"rss_kb": field("VmRSS"), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": field("Threads")}


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def scrape() -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", ADMIN)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n")
    body = (await reader.read()).decode(errors="replace")
    writer.close()
    return body


async def sampler(pid: int, samples: list) -> None:
    start = time.monotonic()
    async for _ in paced(SAMPLE_EVERY):
        if time.monotonic() - start < 1:
            continue
        quiet.clear()
        await asyncio.sleep(1)  # the churn connection under way ends
        sample = proc(pid)
        quiet.set()
        metrics = await scrape()
        sample.update(
            minute=round((time.monotonic() - start) / 60),
            connections=int(metric_sum(metrics, "framegate_connections_active")),
            tasks=int(metric_sum(metrics, "framegate_runtime_tasks")),
            messages=int(metric_sum(metrics, "framegate_messages_total")),
            swaps=int(metric_sum(metrics, "framegate_filter_reloads_total")),
            echo=counts["echo"], hydra=counts["hydra_acked"], inserted=counts["inserted"],
            pushed=counts["query_pushed"], churn=counts["churn"], closes=counts["unexpected_closes"],
        )
        samples.append(sample)
        print(
            "{minute:>4} {rss_kb:>9} {fds:>5} {threads:>7} {tasks:>5} {connections:>5} {messages:>10} {echo:>9} "
            "{hydra:>7} {inserted:>8} {pushed:>8} {churn:>6} {swaps:>5} {closes:>6}".format(**sample),
            flush=True,
        )


def lines_with(path: str, pattern: str) -> set:
    with open(path, errors="replace") as f:
        return set(re.findall(pattern, f.read()))


async def main() -> int:
    os.makedirs(f"{WORK}/filters", exist_ok=True)
    for name in ("echo", "hydra", "query"):
        shutil.copy(os.path.join(FILTERS, f"{name}.wasm"), f"{WORK}/filters/{name}.wasm")
    write_atomically(f"{WORK}/framegate.toml", config(False).encode())
    log = open(f"{WORK}/framegate.log", "wb")
    proxy = subprocess.Popen(
        ["nice", "-n", "10", BINARY, "run", f"{WORK}/framegate.toml"], stdout=log, stderr=subprocess.STDOUT
    )
    for _ in range(100):
        try:
            await scrape()
            break
        except OSError:
            await asyncio.sleep(0.1)
    quiet.set()
    print(f"framegate pid {proxy.pid}, {MINUTES:g} min, warm-up {WARM_UP / 60:g} min, work dir {WORK}")
    print("min    rss_kB   fds threads tasks conns   messages      echo   hydra inserted   pushed  churn swaps closes")
    samples = []
    tasks = [asyncio.create_task(t) for t in [
        *(echo(n) for n in range(4)), churn(), ingest(), *(hydra(n) for n in range(2)),
        *(subscriber(n) for n in range(2)), inserter(), swapper(), reloader(), sampler(proxy.pid, samples),
    ]]
    await asyncio.sleep(MINUTES * 60 + 5)
    stop.set()
    await asyncio.sleep(2)  # what is in flight lands
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reloads_log = open(f"{WORK}/framegate.log", errors="replace").read().count("config reloaded")
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=30)

    settled = [s for s in samples if s["minute"] * 60 >= WARM_UP] or samples[-1:]
    spread = lambda key: (max(s[key] for s in settled) - min(s[key] for s in settled)) / min(s[key] for s in settled)
    hydra_missing = hydra_acked_ids - {t[:-1] for t in lines_with(f"{WORK}/hydra.jsonl", r"h\d+_\d+x")}
    ingested = len(lines_with(f"{WORK}/ingest.jsonl", r'soak\\?"?:\s*\d+'))
    query_missing = {
        n: sum(1 for value, at in inserted_values if at > subscribed_at.get(n, 1e18) + 1 and value not in seen)
        for n, seen in subscriber_seen.items()
    }
    checks = [
        (f"RSS flat after warm-up: spread {spread('rss_kb'):.1%}", spread("rss_kb") <= 0.05),
        (f"open files flat after warm-up: spread {spread('fds'):.1%}", spread("fds") <= 0.05),
        (f"acknowledged Hydra records missing from the file: {len(hydra_missing)} of {len(hydra_acked_ids)}", not hydra_missing),
        (f"ingest records in the file: {ingested} of {counts['ingest_sent']} sent", ingested == counts["ingest_sent"]),
        (f"echoes answered with other bytes: {counts['echo_wrong']}", counts["echo_wrong"] == 0),
        (f"live-query records not delivered, per subscriber: {query_missing}", not any(query_missing.values())),
        (f"unexpected closes: {counts['unexpected_closes']} {closes[:5]}", counts["unexpected_closes"] == 0),
        (f"swaps written {counts['swaps']}, config reloads written {counts['reloads']}, applied {reloads_log}",
         reloads_log == counts["reloads"]),
    ]
    print(f"\ntotals: {json.dumps(counts)}")
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
