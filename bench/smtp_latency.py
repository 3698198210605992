#!/usr/bin/env python3
"""SMTP load client that measures, for each message, the time from the end of its data
(the CRLF.CRLF sent) to the server's reply, and prints throughput and latency percentiles as
one JSON line. Used by scripts/bench next to smtp-source, which measures throughput only.

usage: smtp_latency.py HOST:PORT --messages N --sessions S --size BYTES
"""
import argparse
import asyncio
import json
import sys
import time


async def session(host, port, count, body, latencies, failures):
    reader, writer = await asyncio.open_connection(host, port)

    async def reply():
        lines = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line)
            if line[3:4] != b"-":
                return lines[-1]

    await reply()
    writer.write(b"EHLO bench.test\r\n")
    await reply()
    for _ in range(count):
        # PIPELINING: the envelope in one write, as smtp-source does.
        writer.write(b"MAIL FROM:<bench@demo.test>\r\nRCPT TO:<sink@example.com>\r\nDATA\r\n")
        answers = [await reply() for _ in range(3)]
        if not answers[2].startswith(b"354"):
            failures.append(answers[2].decode(errors="replace").strip())
            writer.write(b"RSET\r\n")
            await reply()
            continue
        writer.write(body)
        started = time.perf_counter()
        await writer.drain()
        answer = await reply()
        latencies.append(time.perf_counter() - started)
        if not answer.startswith(b"250"):
            failures.append(answer.decode(errors="replace").strip())
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    host, _, port = args.server.rpartition(":")
    line = b"X" * 76 + b"\r\n"
    body = (b"From: bench@demo.test\r\nTo: sink@example.com\r\nSubject: bench\r\n\r\n"
            + line * max(1, args.size // len(line)) + b".\r\n")
    latencies, failures = [], []
    per_session = [args.messages // args.sessions + (1 if i < args.messages % args.sessions else 0)
                   for i in range(args.sessions)]
    started = time.perf_counter()
    await asyncio.gather(*(session(host, int(port), n, body, latencies, failures) for n in per_session if n))
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "messages": len(latencies), "failures": len(failures), "first_failure": failures[0] if failures else None,
        "seconds": round(elapsed, 3), "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2), "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
