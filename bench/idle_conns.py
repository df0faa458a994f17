#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one request on each, holds them idle,
prints the proxy's RSS (from /proc/PID/status) before and while they are held, then closes them.

usage: idle_conns.py HOST PORT PID N [HOLD_SECONDS]
prints: IDLE <n_ok> <rss_before_kib> <rss_held_kib>
"""
import asyncio
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CONCURRENT_OPENS = 256


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


async def open_one(host, port, sem, held):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(REQUEST)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(r.readexactly(length), 10)
            if head.startswith(b"HTTP/1.1 200"):
                held.append(w)
            else:
                w.close()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass


async def main():
    host, port, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    hold = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
    before = rss_kib(pid)
    sem = asyncio.Semaphore(CONCURRENT_OPENS)
    held = []
    await asyncio.wait_for(
        asyncio.gather(*(open_one(host, port, sem, held) for _ in range(n))), 120
    )
    await asyncio.sleep(hold)
    during = rss_kib(pid)
    for w in held:
        w.close()
    print(f"IDLE {len(held)} {before} {during}", flush=True)


asyncio.run(main())
