"""An independent Pulsar client (the `pulsar-client` package, Apache's C++ client) for
tests/pulsar_ws.rs: it reads what framegate's WebSocket producers wrote, and writes what its
WebSocket consumers should get. Every message is printed as a JSON line with its id as
Pulsar's WebSocket API writes it: base64 of the serialized MessageIdData.

    pulsar_client_check.py read  pulsar://HOST:PORT TOPIC SUBSCRIPTION COUNT
    pulsar_client_check.py write pulsar://HOST:PORT TOPIC COUNT
"""

import base64
import json
import sys

import pulsar


def message_id(msg_id):
    return base64.b64encode(msg_id.serialize()).decode()


def main():
    mode, url, topic = sys.argv[1:4]
    client = pulsar.Client(url, operation_timeout_seconds=20, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        if mode == "read":
            subscription, count = sys.argv[4], int(sys.argv[5])
            consumer = client.subscribe(topic, subscription, initial_position=pulsar.InitialPosition.Earliest)
            seen = set()
            while len(seen) < count:
                msg = consumer.receive(timeout_millis=20000)
                consumer.acknowledge(msg)
                key = message_id(msg.message_id())
                if key in seen:
                    continue  # a broker may dispatch a message twice; the test checks each once
                seen.add(key)
                line = {
                    "messageId": key,
                    "payload": msg.data().decode(),
                    "properties": msg.properties(),
                    "key": msg.partition_key(),
                }
                print(json.dumps(line, sort_keys=True), flush=True)
        elif mode == "write":
            producer = client.create_producer(topic)
            for i in range(int(sys.argv[4])):
                sent = producer.send(f"py{i}".encode(), properties={"n": str(i)}, partition_key=f"pk{i}")
                print(json.dumps({"messageId": message_id(sent)}), flush=True)
        else:
            sys.exit(f"unknown mode {mode}")
    finally:
        client.close()


if __name__ == "__main__":
    main()
