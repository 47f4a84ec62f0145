#!/usr/bin/env python3
"""An emulated WAN link for the benchmark: a TCP proxy on 127.0.0.1 that delays every byte by a
fixed one-way latency in each direction and limits the bandwidth of each direction to a rate
shared by all connections (one link, like `tc netem delay` + `tbf` on an interface; this
machine's kernel has no netem).

    scripts/wan_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT [--delay-ms 20] [--mbit 200]
                         [--stats FILE]

Each received piece of data is forwarded at max(arrival + delay, when the link is free);
the link is then busy for len/rate. With --stats, the bytes sent to clients (downstream) and
the connections accepted are written to FILE (JSON) every 0.1 s and on SIGTERM. Runs until killed.
"""
import argparse
import asyncio
import json
import os
import signal
import time


class Link:
    """One direction of the link: a FIFO of pieces, each due at arrival + delay, paced."""

    def __init__(self, delay_s, rate_bps):
        self.delay = delay_s
        self.rate = rate_bps / 8.0  # bytes per second
        self.free_at = 0.0

    def schedule(self, size):
        """Reserves the link for `size` bytes; returns (start, end) on the loop's clock."""
        now = time.monotonic()
        start = max(now + self.delay, self.free_at)
        end = start + size / self.rate
        self.free_at = end
        return start, end


class Stats:
    def __init__(self, path):
        self.path = path
        self.down = 0
        self.up = 0
        self.connections = 0
        self.last = 0.0

    def write(self, force=False):
        if not self.path:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"down_bytes": self.down, "up_bytes": self.up,
                       "connections": self.connections}, f)
        os.replace(tmp, self.path)


async def pump(reader, writer, link, stats, downstream):
    queue = asyncio.Queue()

    async def sender():
        while True:
            item = await queue.get()
            if item is None:
                break
            data, start, end = item
            delay = start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            # Pacing: the piece occupies the link until `end`.
            delay = end - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await writer.drain()
            except ConnectionError:
                break
            if downstream:
                stats.down += len(data)
            else:
                stats.up += len(data)
            stats.write()
        try:
            writer.close()
        except Exception:
            pass

    task = asyncio.ensure_future(sender())
    try:
        while True:
            data = await reader.read(32 << 10)
            if not data:
                break
            start, end = link.schedule(len(data))
            queue.put_nowait((data, start, end))
    except ConnectionError:
        pass
    queue.put_nowait(None)
    await task


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("upstream")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--mbit", type=float, default=200.0)
    ap.add_argument("--stats", default="")
    args = ap.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    down = Link(args.delay_ms / 1000.0, args.mbit * 1e6)
    up = Link(args.delay_ms / 1000.0, args.mbit * 1e6)
    stats = Stats(args.stats)
    stats.write(force=True)

    async def handle(client_reader, client_writer):
        stats.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, up, stats, False),
                             pump(server_reader, client_writer, down, stats, True))
        stats.write(force=True)

    async def flush():
        while True:
            await asyncio.sleep(0.1)
            stats.write(force=True)

    flusher = asyncio.ensure_future(flush())
    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    flusher.cancel()
    stats.write(force=True)


if __name__ == "__main__":
    asyncio.run(main())
