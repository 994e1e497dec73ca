"""A browser-like client with permessage-deflate (Python `websockets`, which offers it by
default): sends a 4 KiB JSON text message, a 4 KiB binary one and a short text, checks each echo,
and prints the extension the server agreed to and whether the echoes came back equal.

    python3 deflate_client.py URL
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url):
    async with connect(url, max_size=None) as ws:
        print(ws.response.headers.get("Sec-WebSocket-Extensions", "none"))
        rows = [{"symbol": f"S{i % 50}", "price": i * 1.25, "side": "buy"} for i in range(120)]
        text = json.dumps(rows)[:4096]
        binary = text.encode() * 2
        for message in [text, binary, "short"]:
            await ws.send(message)
            echo = await ws.recv()
            print("equal" if echo == message else f"differs: {echo[:40]!r}")


asyncio.run(main(sys.argv[1]))
