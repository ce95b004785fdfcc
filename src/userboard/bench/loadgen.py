"""A load generator process: N Socket.IO clients on one asyncio loop, recording arrivals.

Speaks just enough Engine.IO 4 / Socket.IO 5 over a raw WebSocket to connect to a namespace,
answer pings and timestamp every event. Arrival times are `time.monotonic_ns()`, which is the
same clock in every process of this machine, so the driver can subtract its send times.

Protocol with the driver (JSON lines): prints {"ready": connected, "failed": n}; then records
until a line "stop" arrives on stdin; then prints {"arrivals": [[client, key, t_ns, size], ...]}
where key is the payload's "seq" (or "taken_at_ns" for snapshots). Before that, any number of
"wait SEQ SECONDS" lines: each is answered with {"reached": true/false} once every connected
client has an event at SEQ or later (or after SECONDS).

With --views (a JSON list), client i subscribes to view i at connect (`auth["view"]`) and records
`users_view_changed`; the first whole window (`users_view`) is not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import websockets

SEQ_RE = re.compile(r'"(seq|taken_at_ns)":\s*(\d+)')


async def client(index, url, namespace, auth, arrivals, ready, record_snapshots, highest):
    try:
        async with websockets.connect(url, max_size=None, compression=None, open_timeout=60,
                                      ping_interval=None) as ws:
            await ws.recv()  # the Engine.IO open packet
            await ws.send(f"40{namespace}," + json.dumps(auth))
            prefix = f"42{namespace},"
            while True:
                message = await ws.recv()
                now = time.monotonic_ns()
                if message == "2":
                    await ws.send("3")
                elif message.startswith(prefix):
                    if message.startswith(prefix + '["users_snapshot"') and not record_snapshots:
                        continue
                    if message.startswith(prefix + '["users_view"'):
                        continue
                    if message.startswith(prefix + '["heartbeat"'):
                        continue
                    found = SEQ_RE.search(message, 0, 400)
                    if found:
                        arrivals.append((index, int(found.group(2)), now, len(message)))
                        highest[index] = max(highest.get(index, 0), int(found.group(2)))
                elif message.startswith(f"40{namespace}"):
                    ready.set_result(True) if not ready.done() else None
                elif message.startswith(f"44{namespace}"):
                    ready.set_result(False) if not ready.done() else None
                    return
    except (TimeoutError, OSError, websockets.WebSocketException):
        if not ready.done():
            ready.set_result(False)


async def main_async(args) -> None:
    auth = json.loads(args.auth)
    views = json.loads(args.views) if args.views else None
    arrivals: list = []
    highest: dict[int, int] = {}  # client -> the highest seq it received
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in range(args.clients)]
    tasks = []
    gate = asyncio.Semaphore(50)  # do not stampede the server's accept queue

    async def start(i):
        async with gate:
            tasks.append(asyncio.create_task(
                client(i + args.offset, args.url, args.namespace,
                       {**auth, "view": views[i]} if views else auth, arrivals, readies[i],
                       args.snapshots, highest)))
            await asyncio.wait_for(asyncio.shield(readies[i]), 120)

    await asyncio.gather(*(start(i) for i in range(args.clients)), return_exceptions=True)
    connected = sum(1 for r in readies if r.done() and r.result())
    print(json.dumps({"ready": connected, "failed": args.clients - connected}), flush=True)
    ready_clients = [i + args.offset for i, r in enumerate(readies) if r.done() and r.result()]
    while (command := (await loop.run_in_executor(None, sys.stdin.readline)).split())[:1] == ["wait"]:
        seq, deadline = int(command[1]), loop.time() + float(command[2])
        while loop.time() < deadline and any(highest.get(i, 0) < seq for i in ready_clients):
            await asyncio.sleep(0.01)
        reached = all(highest.get(i, 0) >= seq for i in ready_clients)
        print(json.dumps({"reached": reached}), flush=True)
    print(json.dumps({"arrivals": arrivals}), flush=True)  # "stop" (or the end of the input)
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", default="/users")
    parser.add_argument("--auth", default="{}")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--snapshots", action="store_true", help="record users_snapshot too")
    parser.add_argument("--views", help="a JSON list: client i holds view i")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
