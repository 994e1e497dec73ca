"""The seed's sample Hydra interaction, run by websocket-client (tests/hydra.rs drives it).

Usage: hydra_sample.py URL [--header "name: value"]... -- MESSAGE...
Sends each MESSAGE in turn and prints the answer to it on a line of its own.
"""
import sys

import websocket

args = sys.argv[1:]
url, args = args[0], args[1:]
headers = []
while args and args[0] == "--header":
    headers.append(args[1])
    args = args[2:]
assert args and args[0] == "--", "messages come after --"
ws = websocket.create_connection(url, header=headers, timeout=20)
for message in args[1:]:
    ws.send(message)
    print(ws.recv(), flush=True)
ws.close()
