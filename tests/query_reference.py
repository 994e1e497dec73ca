"""Random live queries against a reference evaluator (tests/query.rs drives it).

Usage: query_reference.py ws://HOST:PORT [--queries N] [--records N] [--connections N] [--seed S]

Subscribes N random queries (comparisons, ranges, like, is [not] null, and/or/not, parentheses,
NSDb filters, from/to; a few repeated, so they share a quid) spread over several /ws-stream
sockets, inserts random records through /ws-insert, and checks that every socket received, for
each quid, exactly the records this file's own evaluator says match, each once, in insert order.
Prints `ok ...` last when they all did; exits non-zero otherwise.
"""
import argparse
import json
import random
import re
import sys
import threading
import time

import websocket

parser = argparse.ArgumentParser()
parser.add_argument("base")
parser.add_argument("--queries", type=int, default=200)
parser.add_argument("--records", type=int, default=20000)
parser.add_argument("--connections", type=int, default=4)
parser.add_argument("--seed", type=int, default=9)
args = parser.parse_args()
rng = random.Random(args.seed)

CITIES = ["Rome", "Roma", "Paris", "Porto", "Praha", "Berlin", "Bern", "Oslo"]
OPS = ["=", ">", ">=", "<", "<="]
BASE_TS = 1_000_000
METRIC = "random"


def make_record(i):
    dimensions = {"id": i, "city": rng.choice(CITIES), "n": rng.randrange(100), "x": round(rng.uniform(-50, 50), 2)}
    if rng.random() < 0.5:
        dimensions["opt"] = rng.choice(["a", "b", "c"])
    value = rng.randrange(1000) if rng.random() < 0.5 else round(rng.uniform(0, 1000), 3)
    return {"timestamp": BASE_TS + i * 10, "value": value, "dimensions": dimensions}


# The reference semantics (docs/filters/query.md): a name is `timestamp`, `value` or a
# dimension; a comparison with an absent name is false; numbers compare with numbers, text
# with text; `like` takes `$` as any run of characters; `in (lo, hi)` includes both ends.
def field(r, name):
    if name in ("timestamp", "value"):
        return r[name]
    return r["dimensions"].get(name)


def compare(r, name, op, k):
    v = field(r, name)
    if v is None or isinstance(v, str) != isinstance(k, str):
        return False
    return {"=": v == k, ">": v > k, ">=": v >= k, "<": v < k, "<=": v <= k}[op]


def like(r, name, pattern):
    v = field(r, name)
    regex = "^" + ".*".join(re.escape(p) for p in pattern.split("$")) + "$"
    return isinstance(v, str) and re.match(regex, v, re.S) is not None


def between(r, name, lo, hi):
    v = field(r, name)
    return v is not None and lo <= v <= hi


def null(r, name, is_null):
    return (field(r, name) is None) == is_null


def pattern():
    city = rng.choice(CITIES)
    cut = rng.randrange(1, len(city))
    return rng.choice([city[:cut] + "$", "$" + city[cut:], "$" + city[1:cut + 1] + "$", city, city[0] + "$" + city[-1]])


def atom():
    """(SQL text, Python expression over `r`)."""
    kind = rng.randrange(9)
    if kind == 0:
        c = rng.choice(CITIES)
        return f"city = {c}" if rng.random() < 0.5 else f"city = '{c}'", f"compare(r, 'city', '=', {c!r})"
    if kind == 1:
        op, k = rng.choice(OPS), rng.randrange(100)
        return f"n {op} {k}", f"compare(r, 'n', {op!r}, {k})"
    if kind == 2:
        op, k = rng.choice(OPS[1:]), round(rng.uniform(-50, 50), 1)
        return f"x {op} {k:.1f}", f"compare(r, 'x', {op!r}, {k!r})"
    if kind == 3:
        p = pattern()
        return f"city like {p}" if rng.random() < 0.5 else f"city like '{p}'", f"like(r, 'city', {p!r})"
    if kind == 4:
        lo = rng.randrange(100)
        hi = lo + rng.randrange(30)
        return f"n in ({lo}, {hi})", f"between(r, 'n', {lo}, {hi})"
    if kind == 5:
        lo = BASE_TS + rng.randrange(args.records) * 10
        hi = lo + rng.randrange(args.records // 2) * 10
        return f"timestamp in ({lo}, {hi})", f"between(r, 'timestamp', {lo}, {hi})"
    if kind == 6:
        negated = rng.random() < 0.5
        return f"opt is {'not ' if negated else ''}null", f"null(r, 'opt', {not negated})"
    if kind == 7:
        op, k = rng.choice(OPS[1:]), rng.randrange(1000)
        return f"value {op} {k}", f"compare(r, 'value', {op!r}, {k})"
    o = rng.choice(["a", "b", "c"])
    return f"opt = {o}", f"compare(r, 'opt', '=', {o!r})"


def condition(depth):
    if depth == 0 or rng.random() < 0.35:
        return atom()
    kind = rng.randrange(4)
    if kind == 0:
        sql, py = condition(depth - 1)
        return f"not {sql}", f"not {py}"
    if kind == 1:
        sql, py = condition(depth - 1)
        return f"({sql})", f"({py})"
    (a, pa), (b, pb) = condition(depth - 1), condition(depth - 1)
    word = "and" if kind == 2 else "or"
    # Both languages give `and` precedence over `or` and `not` over both.
    return f"{a} {word} {b}", f"{pa} {word} {pb}"


def nsdb_filter():
    kind = rng.randrange(4)
    if kind == 0:
        c = rng.choice(CITIES)
        return {"dimension": "city", "value": c, "operator": "="}, f"compare(r, 'city', '=', {c!r})"
    if kind == 1:
        op, k = rng.choice(OPS), rng.randrange(100)
        return {"dimension": "n", "value": k, "operator": op}, f"compare(r, 'n', {op!r}, {k})"
    if kind == 2:
        p = pattern()
        return {"dimension": "city", "value": p, "operator": rng.choice(["like", "LIKE", " Like"])}, f"like(r, 'city', {p!r})"
    negated = rng.random() < 0.5
    operator = rng.choice(["isnotnull", "IS NOT NULL"]) if negated else rng.choice(["isnull", "is null"])
    return {"dimension": "opt", "operator": operator}, f"null(r, 'opt', {not negated})"


def make_query():
    sql, py = condition(3)
    message = {"db": "db", "namespace": "ns", "metric": METRIC, "queryString": f"select * from {METRIC} where {sql}"}
    parts = [f"({py})"]
    if rng.random() < 0.3:
        filters = [nsdb_filter() for _ in range(rng.randrange(1, 3))]
        message["filters"] = [f for f, _ in filters]
        parts += [f"({p})" for _, p in filters]
    if rng.random() < 0.2:
        start = BASE_TS + rng.randrange(args.records) * 10
        message["from"], message["to"] = start, start + rng.randrange(args.records) * 10
        parts.append(f"{message['from']} <= r['timestamp'] <= {message['to']}")
    return message, eval("lambda r: " + " and ".join(parts))


queries = []
for q in range(args.queries):
    if q >= 10 and rng.random() < 0.05:
        queries.append(queries[rng.randrange(len(queries))])  # the same again: the same quid
    else:
        queries.append(make_query())

records = [make_record(i) for i in range(args.records)]

# Subscribe: connection c takes every c-th query.
sockets = [websocket.create_connection(args.base + "/ws-stream?retention_size=1000000", timeout=30)
           for _ in range(args.connections)]
expected = {}  # (connection, quid) -> ids
for q, (message, predicate) in enumerate(queries):
    c = q % args.connections
    sockets[c].send(json.dumps(message))
    answer = json.loads(sockets[c].recv())
    if "quid" not in answer or answer["records"] != []:
        sys.exit(f"subscription {q} {message} answered {answer}")
    ids = [r["dimensions"]["id"] for r in records if predicate(r)]
    previous = expected.setdefault((c, answer["quid"]), ids)
    if previous != ids:
        sys.exit(f"quid {answer['quid']} shared by queries that differ: {message}")

received = {key: [] for key in expected}
errors = []
lock = threading.Lock()


def read(c, ws):
    ws.settimeout(None)
    while True:
        try:
            frame = ws.recv()
        except (websocket.WebSocketConnectionClosedException, OSError):
            return
        if not frame:
            return
        push = json.loads(frame)
        key = (c, push.get("quid"))
        with lock:
            if key not in received or push.get("metric") != METRIC:
                errors.append(f"connection {c}: unexpected {frame[:200]}")
            else:
                received[key].extend(r["dimensions"]["id"] for r in push["records"])


readers = [threading.Thread(target=read, args=(c, ws), daemon=True) for c, ws in enumerate(sockets)]
for reader in readers:
    reader.start()


def caught_up(inserted):
    with lock:
        return all(len(received[key]) >= sum(1 for i in ids if i < inserted) for key, ids in expected.items())


inserter = websocket.create_connection(args.base + "/ws-insert", timeout=30)
started = time.monotonic()
BATCH, STEP = 100, 1000
for start in range(0, args.records, BATCH):
    batch = [{"db": "db", "namespace": "ns", "metric": METRIC, "bit": r} for r in records[start:start + BATCH]]
    inserter.send(json.dumps(batch))
    ack = inserter.recv()
    if ack != json.dumps({"inserted": len(batch)}, separators=(",", ":")):
        sys.exit(f"insert answered {ack}")
    inserted = start + len(batch)
    if inserted % STEP == 0 or inserted == args.records:
        # Keep the bus from running far ahead of the subscribers (it drops what they miss).
        deadline = time.monotonic() + 60
        while not caught_up(inserted):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)

# Whatever else may still come would be a record too many: give it a refresh period or two.
time.sleep(0.5)
for ws in sockets:
    ws.close()

bad = [key for key in expected if received[key] != expected[key]]
for key in bad[:5]:
    got, want = received[key], expected[key]
    extra = sorted(set(got) - set(want))[:10]
    missing = sorted(set(want) - set(got))[:10]
    print(f"connection {key[0]} quid {key[1]}: got {len(got)} want {len(want)}; extra {extra} missing {missing}"
          f"{'; order or repeats differ' if not extra and not missing else ''}")
for error in errors[:5]:
    print(error)
matched = sum(len(ids) for ids in expected.values())
if bad or errors:
    sys.exit(f"{len(bad)} of {len(expected)} subscriptions wrong, {len(errors)} unexpected frames")
print(f"ok {len(queries)} queries ({len(expected)} subscriptions), {len(records)} records, "
      f"{matched} deliveries, {time.monotonic() - started:.1f} s")
