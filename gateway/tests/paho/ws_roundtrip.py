"""paho-mqtt (Python) over WebSocket through the gateway, with paho's default WebSocket settings
(path /mqtt, and the headers paho sends: Host HOST:PORT, Origin https://HOST:PORT).

    ws_roundtrip.py ws|wss HOST PORT CLIENT_ID TOPIC [--user U --password P]
                    [--ca CA --cert CERT --key KEY] [--origin ORIGIN]

Subscribes to TOPIC, publishes one QoS 1 message to it and waits for it to come back.
Exit 0 and "received <payload>": the round trip worked. Exit 2 and "refused <reason>": the
WebSocket upgrade was refused (--origin replaces paho's Origin header). Exit 1: anything else.
Used by gateway/tests/websocket.rs.
"""

import argparse
import sys
import threading

import paho.mqtt.client as mqtt

WAIT = 20  # seconds: an upper bound for each step, not a pace


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scheme", choices=["ws", "wss"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("client_id")
    p.add_argument("topic")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--origin")
    a = p.parse_args()

    kwargs = {"client_id": a.client_id, "transport": "websockets"}
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
        kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
    client = mqtt.Client(**kwargs)
    if a.origin:
        client.ws_set_options(headers={"Origin": a.origin})
    if a.user:
        client.username_pw_set(a.user, a.password)
    if a.scheme == "wss":
        client.tls_set(ca_certs=a.ca, certfile=a.cert, keyfile=a.key)

    connected = threading.Event()
    subscribed = threading.Event()
    received = []
    got = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, rc):
        result["connack"] = rc
        connected.set()

    def on_subscribe(c, userdata, mid, granted):
        subscribed.set()

    def on_message(c, userdata, msg):
        received.append(msg.payload.decode())
        got.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(a.host, a.port, keepalive=30)
    except Exception as e:  # paho raises WebsocketConnectionError for a refused upgrade
        print(f"refused {type(e).__name__}: {e}")
        return 2
    client.loop_start()
    try:
        if not connected.wait(WAIT) or result.get("connack") != 0:
            print(f"no accepting CONNACK: {result.get('connack')}")
            return 1
        client.subscribe(a.topic, qos=1)
        if not subscribed.wait(WAIT):
            print("no SUBACK")
            return 1
        payload = f"hello from paho over {a.scheme}"
        client.publish(a.topic, payload, qos=1).wait_for_publish(WAIT)
        if not got.wait(WAIT):
            print("the message did not come back")
            return 1
        print(f"received {received[0]}")
        client.disconnect()
        return 0
    finally:
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
