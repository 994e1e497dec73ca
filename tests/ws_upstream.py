"""An upstream WebSocket server for tests/ws_source.rs and tests/deflate*.rs (Python `websockets`,
which agrees to permessage-deflate and compresses every message when a client offers it).

It streams numbered JSON messages, `{"n": N}`, one every --interval-ms, to every client that is
connected, and logs every event as a JSON line to --log: each connection's request headers
(`open`), what each connection sent it (`recv`, init messages), each number sent (`sent`) or
made while nobody was connected (`unsent`). Numbers go on across restarts: it starts after the
highest number in the log. With --rows FILE it sends the file's lines instead, once, to the first
client; --hello greets each client with a binary message first; --echo sends nothing of its own
but every message back to its sender. With --cert/--key it serves wss; with --client-ca it also
asks for a client certificate.
SIGTERM stops it cleanly between two messages, so the log is exact.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import ssl

import websockets


HELLO = b"\x00\x01hello"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--interval-ms", type=float, default=10)
    parser.add_argument(
        "--count", type=int, default=0, help="send this many, from when the first client is there (0: no end)"
    )
    parser.add_argument("--pad", type=int, default=0, help="bytes of padding in each message")
    parser.add_argument("--hello", action="store_true", help="greet each client with a binary message")
    parser.add_argument("--echo", action="store_true", help="send each message back, and nothing else")
    parser.add_argument("--rows")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    args = parser.parse_args()
    asyncio.run(serve(args))


def last_number(path):
    last = 0
    if os.path.exists(path):
        with open(path) as log:
            for line in log:
                event = json.loads(line)
                last = max(last, event.get("n", 0))
    return last


async def serve(args):
    log = open(args.log, "a", buffering=1)

    def note(**event):
        log.write(json.dumps(event) + "\n")

    clients = {}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ids = iter(range(1, 1 << 30))

    async def handler(ws):
        conn = f"{os.getpid()}-{next(ids)}"
        headers = {name.lower(): value for name, value in ws.request.headers.raw_items()}
        note(event="open", conn=conn, path=ws.request.path, headers=headers)
        if args.hello:
            await ws.send(HELLO)
        clients[conn] = ws
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    note(event="recv", conn=conn, binary=base64.b64encode(message).decode())
                else:
                    note(event="recv", conn=conn, text=message)
                if args.echo:
                    await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            clients.pop(conn, None)
            note(event="close", conn=conn)

    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)

    serving = websockets.serve(
        handler, "127.0.0.1", args.port, ssl=context, max_size=None, select_subprotocol=pick_subprotocol
    )
    async with serving:
        note(event="listening")
        if args.rows:
            await send_rows(args.rows, clients, stop, note)
        elif not args.echo:
            await send_numbers(args, clients, stop, note)
        await stop.wait()
        for ws in list(clients.values()):
            await ws.close(1001, "going away")
    note(event="stopped")


def pick_subprotocol(connection, offered):
    """The first protocol the client offers, if any: clients that offer none are welcome too."""
    return offered[0] if offered else None


async def send_numbers(args, clients, stop, note):
    n = last_number(args.log)
    made = 0
    if args.count:
        await first_client(clients, stop)
    while not stop.is_set() and (args.count == 0 or made < args.count):
        n += 1
        made += 1
        if clients:
            text = json.dumps({"n": n, "pad": "x" * args.pad} if args.pad else {"n": n})
            for conn, ws in list(clients.items()):
                try:
                    await ws.send(text)
                    note(event="sent", n=n, conn=conn)
                except websockets.ConnectionClosed:
                    note(event="unsent", n=n)
        else:
            note(event="unsent", n=n)
        if args.interval_ms > 0:
            try:
                await asyncio.wait_for(stop.wait(), args.interval_ms / 1000)
            except asyncio.TimeoutError:
                pass


async def first_client(clients, stop):
    while not clients and not stop.is_set():
        await asyncio.sleep(0.01)


async def send_rows(path, clients, stop, note):
    await first_client(clients, stop)
    ws = next(iter(clients.values()), None)
    if ws is None:
        return
    with open(path) as rows:
        count = 0
        for line in rows:
            await ws.send(line.rstrip("\n"))
            count += 1
    note(event="rows_sent", count=count)


if __name__ == "__main__":
    main()
