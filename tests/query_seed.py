"""The seed's /ws-stream examples (and the insert socket) run by websocket-client; tests/query.rs
drives it and checks every line byte for byte.

Usage: query_seed.py ws://HOST:PORT
Prints one line per frame received, `LABEL FRAME`, in the order of the steps below.
"""
import json
import sys
import time

import websocket

base = sys.argv[1]


def out(label, text):
    print(f"{label} {text}", flush=True)


def connect(path):
    return websocket.create_connection(base + path, timeout=20)


inserter = connect("/ws-insert")


def insert(metric, bit):
    inserter.send(json.dumps({"db": "db", "namespace": "namespace", "metric": metric, "bit": bit}))
    out("insert", inserter.recv())


def ask(ws, label, message):
    ws.send(message if isinstance(message, str) else json.dumps(message))
    answer = ws.recv()
    out(label, answer)
    return json.loads(answer)


# Two records retained before anyone subscribes.
insert("metric", {"timestamp": 100000, "value": 1, "dimensions": {"key": "Key1"}})
insert("metric", {"timestamp": 100000, "value": 2, "dimensions": {"key": "Key2"}})

# The seed's three subscribe examples; a second socket with the same query gets the same quid.
stream = connect("/ws-stream?refresh_period=200&retention_size=10")
first = {"db": "db", "namespace": "namespace", "metric": "metric", "queryString": "select * from metric limit 1"}
quid = ask(stream, "subscribed", first)["quid"]
other = connect("/ws-stream")
ask(other, "subscribed", dict(first, queryString="SELECT * FROM metric LIMIT 1"))
people = {"db": "db", "namespace": "namespace", "metric": "people",
          "queryString": "select * from people limit 100", "from": 0, "to": 100000}
ask(stream, "subscribed", people)
filtered = dict(people, filters=[{"dimension": "dimName1", "value": "value", "operator": "="},
                                 {"dimension": "dimName2", "value": 1, "operator": "="}])
ask(stream, "subscribed", filtered)

# A new record reaches both sockets' subscription, as the seed's push example.
insert("metric", {"timestamp": 100000, "value": 15.0, "dimensions": {"key": "Key1"}})
out("push", stream.recv())
out("push", other.recv())

# people: one record both people queries see, one outside from/to, one only the unfiltered sees.
insert("people", {"timestamp": 5000, "value": 3, "dimensions": {"dimName1": "value", "dimName2": 1}})
out("push", stream.recv())
out("push", stream.recv())
insert("people", {"timestamp": 200000, "value": 4, "dimensions": {"dimName1": "value", "dimName2": 1}})
insert("people", {"timestamp": 6000, "value": 5, "dimensions": {"dimName1": "value", "dimName2": 2}})
out("push", stream.recv())

# Failures keep NSDb's shape; the socket stays open.
ask(stream, "failed", dict(first, queryString="select * from metric where"))
ask(stream, "failed", dict(first, queryString="delete from metric where key = Key1"))
ask(stream, "invalid", {"hello": "world"})
ask(stream, "invalid", "not json")

# The unsubscribe extension: after it, the first query's records no longer come. Past a
# refresh period a live subscription pushes at once, so it would show before the next push.
ask(stream, "unsubscribed", {"quid": quid, "unsubscribe": True})
ask(stream, "unknown", {"quid": quid, "unsubscribe": True})
time.sleep(0.3)
insert("metric", {"timestamp": 100001, "value": 3, "dimensions": {"key": "Key1"}})
ask(stream, "subscribed", dict(first, queryString="select * from metric where key = Key2"))
insert("metric", {"timestamp": 100002, "value": 7, "dimensions": {"key": "Key2"}})
out("push", stream.recv())

# A refresh_period below the minimum is refused at the upgrade.
try:
    connect("/ws-stream?refresh_period=50")
    out("refused", "no: the upgrade succeeded")
except websocket.WebSocketBadStatusException as e:
    out("refused", f"{e.status_code} {e.resp_body.decode()}")
