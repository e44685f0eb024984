#!/usr/bin/env python3
"""A TCP forwarder that adds one-way latency (the lab's stand-in for netem, which this machine's
kernel lacks: `tc qdisc add ... netem` answers "Specified qdisc kind is unknown").

    delay-proxy.py TARGET_ADDR TARGET_PORT DELAY_MS [LISTEN_PORT]
    delay-proxy.py --many DELAY_MS ADDR:PORT...        (one listener per target, one process)

Listens on 127.0.0.1 (LISTEN_PORT, default: any free port), prints the port (with --many: one
per target, in order) on stdout, and forwards every connection to its target, delaying each
chunk DELAY_MS in each direction: a round trip costs 2 x DELAY_MS more, throughput is not
limited. Runs until killed.
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


async def serve(host, port, delay, listen=0):
    async def handle(cr, cw):
        try:
            tr, tw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, tw, delay), pump(tr, cw, delay))
        for w in (cw, tw):
            w.close()

    return await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)


async def main():
    if sys.argv[1] == "--many":
        delay = int(sys.argv[2]) / 1000.0
        targets = [t.rsplit(":", 1) for t in sys.argv[3:]]
    else:
        delay = int(sys.argv[3]) / 1000.0
        targets = [(sys.argv[1], sys.argv[2])]
    listen = int(sys.argv[4]) if sys.argv[1] != "--many" and len(sys.argv) > 4 else 0
    servers = [await serve(h, int(p), delay, listen) for h, p in targets]
    print("\n".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
