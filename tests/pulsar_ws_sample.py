"""The seed's Python producer and consumer (Pulsar's WebSocket API), brought to Python 3 and
otherwise as written; each prints what the server sent, one JSON document a line.

    pulsar_ws_sample.py produce URL      send the seed's message, print the answer
    pulsar_ws_sample.py consume URL N    print N messages (then their payloads), acking each
"""
import base64
import json
import sys

import websocket


def produce(url):
    ws = websocket.create_connection(url)
    # Send one message
    ws.send(json.dumps({
        'payload': base64.b64encode(b'Hello World').decode(),
        'properties': {
            'key1': 'value1',
            'key2': 'value2'
        },
        'context': 5
    }))
    text = ws.recv()
    response = json.loads(text)
    if response['result'] != 'ok':
        print('Failed to publish message:', response, file=sys.stderr)
    print(text)
    ws.close()


def consume(url, count):
    ws = websocket.create_connection(url)
    for _ in range(count):
        text = ws.recv()
        msg = json.loads(text)
        if not msg:
            break
        print(text)
        print(base64.b64decode(msg['payload']).decode())
        # Acknowledge successful processing
        ws.send(json.dumps({'messageId': msg['messageId']}))
    ws.close()


if __name__ == '__main__':
    if sys.argv[1] == 'produce':
        produce(sys.argv[2])
    else:
        consume(sys.argv[2], int(sys.argv[3]))
