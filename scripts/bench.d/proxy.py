#!/usr/bin/env python3
"""A TCP proxy on loopback that emulates a slow link for scripts/bench (python3 stdlib only;
this kernel has no `tc netem`).

    proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS [RATE_MBIT] [READY_FILE]

Every byte is delivered DELAY_MS after it arrived, in each direction (20 ms each way = 40 ms
round trip), in order. With RATE_MBIT > 0 each direction of each connection also carries at
most that many megabits per second (a byte is delivered once the bytes before it have had
their time on the wire, plus the delay). Half-closes are passed on after the delay, so ssh's
EOF handling is unchanged. TCP_NODELAY on both sides, so Nagle's algorithm adds nothing.
READY_FILE is written once the proxy listens. Runs until killed (SIGTERM/SIGINT).
"""

import asyncio
import signal
import socket
import sys


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def pump(reader, writer, delay, rate):
    """Copies reader to writer, each chunk `delay` s after it was read (and no faster than
    `rate` bytes/s when given)."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def feed():
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    feeder = asyncio.create_task(feed())
    wire_free = 0.0
    try:
        while True:
            due, data = await queue.get()
            if rate and data:
                # Transmission time on the capped link: after the bytes before it.
                start = max(due - delay, wire_free)
                wire_free = start + len(data) / rate
                due = wire_free + delay
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        feeder.cancel()


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    listen, target = addr(sys.argv[1]), addr(sys.argv[2])
    delay = float(sys.argv[3]) / 1000.0
    rate = float(sys.argv[4]) * 1e6 / 8 if len(sys.argv) > 4 and float(sys.argv[4]) > 0 else 0
    ready = sys.argv[5] if len(sys.argv) > 5 else None

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        nodelay(client_w)
        nodelay(server_w)
        try:
            await asyncio.gather(pump(client_r, server_w, delay, rate),
                                 pump(server_r, client_w, delay, rate))
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    if ready:
        with open(ready, "w") as f:
            f.write("%s:%d\n" % listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
