#!/usr/bin/env python3
"""A TCP forwarder that adds one-way latency (the lab's stand-in for netem, which this machine's
kernel lacks: `tc qdisc add ... netem` answers "Specified qdisc kind is unknown").

    delay-proxy.py TARGET_ADDR TARGET_PORT DELAY_MS [LISTEN_PORT]

Listens on 127.0.0.1 (LISTEN_PORT, default: any free port), prints the port on the first line
of stdout, and forwards every connection to TARGET, delaying each chunk DELAY_MS in each
direction: a round trip costs 2 x DELAY_MS more, throughput is not limited. Runs until killed.
"""
import asyncio
import sys


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass


async def main():
    host, port, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000.0
    listen = int(sys.argv[4]) if len(sys.argv) > 4 else 0

    async def handle(cr, cw):
        try:
            tr, tw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, tw, delay), pump(tr, cw, delay))
        for w in (cw, tw):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
