#!/usr/bin/env python3
"""The soak's sender (scripts/soak): N messages, each with a unique id, over many SMTP sessions
at once, retried the way a client MTA retries, and for every message whether the relay
acknowledged it (250 at the end of DATA).

Every message carries `X-Soak-Id: <run>-<n>` in its header and `soak-end <run>-<n>` as the
last line of its body, so that a file at the sink holding the trailer is a complete copy of
that message. --sessions sessions run at once (asyncio, one TCP connection each); a session
sends up to --per-session messages, then QUITs and the next one connects. With --rate R, new
messages start at R per second at most (so that a short run lasts as long as its faults).

Retries, as a client MTA does them (only quicker: seconds, not minutes):
- a 4xx reply to MAIL, RCPT or the end of DATA: the message is tried again after a back-off
  (1 s, doubled up to 16 s); the session goes on after RSET, or closes on 421;
- a connection refused, closed or silent for --reply-timeout seconds: the session is dropped,
  the message it was sending is tried again (when this happened after the end of DATA the
  outcome is unknown: the relay may have taken it, so a second copy may arrive; counted as
  `unknown_outcomes`), and a new session connects after a back-off;
- a 5xx reply: refused for good, not retried (a client MTA would bounce it).
A message not acknowledged within --give-up seconds of its first try is given up.

While it runs it rewrites --progress (JSON: acknowledged, refused, given_up, attempts,
unknown_outcomes, replies_4xx and the first 20 distinct 4xx texts, done) about twice a second; at the end it writes every message's outcome to
--out (JSON lines: id, status acknowledged|refused|given-up, attempts, queue_ids: the ids in
the relay's "250 ... queued as ID" replies, unknown: attempts whose outcome is unknown, reply:
the last reply) and prints the totals as one JSON object.

usage: soak_send.py HOST:PORT --run-id ID --messages N --out FILE --progress FILE
                    [--sessions 32] [--per-session 50] [--size 1024] [--rate 0] [--reply-timeout 60]
                    [--give-up 900] [--from soak@demo.test] [--to soak@example.com]
"""
import argparse
import asyncio
import heapq
import json
import os
import random
import re
import signal
import sys
import time

QUEUED = re.compile(r"queued as (\S+)")


class Failure(Exception):
    """The session is unusable: connection lost, refused, timed out, or 421."""


class Message:
    __slots__ = ("number", "id", "status", "attempts", "queue_ids", "unknown", "reply", "first_try", "backoff")

    def __init__(self, number, run_id):
        self.number = number
        self.id = f"{run_id}-{number}"
        self.status = "pending"
        self.attempts = 0
        self.queue_ids = []
        self.unknown = 0
        self.reply = ""
        self.first_try = None
        self.backoff = 1.0


class Sender:
    def __init__(self, args):
        self.args = args
        self.host, port = args.server.rsplit(":", 1)
        self.port = int(port)
        self.messages = [Message(n, args.run_id) for n in range(1, args.messages + 1)]
        self.ready = list(self.messages)  # never tried yet, in order
        self.ready.reverse()
        self.delayed = []  # (due, number) of messages waiting for their retry
        self.counts = {"acknowledged": 0, "refused": 0, "given_up": 0, "attempts": 0, "unknown_outcomes": 0,
                       "sessions": 0, "session_failures": 0, "replies_4xx": 0}
        self.started = time.monotonic()
        self.temporary = {}  # 4xx reply text (ids taken out) -> how many, the first 20 texts
        self.next_new = self.started  # when the next new message may start (--rate)
        self.padding = self.make_padding(args.size)

    @staticmethod
    def make_padding(size):
        line = "The quick brown fox jumps over the lazy dog, again and again, for the soak. 0123456789"
        lines = []
        total = 0
        while total < size:
            lines.append(line)
            total += len(line) + 2
        return "\r\n".join(lines)

    def body(self, message):
        return (f"From: Soak <{self.args.sender}>\r\n"
                f"To: <{self.args.recipient}>\r\n"
                f"Subject: soak {message.id}\r\n"
                f"Message-Id: <{message.id}@soak.test>\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                f"X-Soak-Id: {message.id}\r\n"
                f"\r\n"
                f"{self.padding}\r\n"
                f"soak-end {message.id}\r\n").encode()

    def outstanding(self):
        return len(self.ready) + len(self.delayed)

    async def next_message(self):
        """The next message to send: a retry that is due, else a new one; None when all are done."""
        while True:
            now = time.monotonic()
            if self.delayed and self.delayed[0][0] <= now:
                _, number = heapq.heappop(self.delayed)
                return self.messages[number - 1]
            if self.ready:
                if self.args.rate:
                    # Paced: new messages at --rate per second at most (retries are not held back).
                    if self.next_new > now:
                        await asyncio.sleep(min(0.2, self.next_new - now))
                        continue
                    self.next_new = max(self.next_new, now - 1) + 1 / self.args.rate
                return self.ready.pop()
            if not self.delayed:
                return None
            await asyncio.sleep(min(0.2, max(0.01, self.delayed[0][0] - now)))

    def retry(self, message, reply):
        message.reply = reply
        if time.monotonic() - message.first_try > self.args.give_up:
            message.status = "given-up"
            self.counts["given_up"] += 1
            return
        due = time.monotonic() + message.backoff * random.uniform(0.8, 1.2)
        message.backoff = min(message.backoff * 2, 16.0)
        heapq.heappush(self.delayed, (due, message.number))

    async def reply(self, reader):
        """One SMTP reply: (code, text of its last line)."""
        lines = []
        while True:
            line = await asyncio.wait_for(reader.readline(), self.args.reply_timeout)
            if not line.endswith(b"\n"):
                raise Failure("connection closed")
            text = line.decode(errors="replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                break
        last = lines[-1]
        if not last[:3].isdigit():
            raise Failure(f"not an SMTP reply: {last!r}")
        return int(last[:3]), " | ".join(lines)

    async def command(self, reader, writer, line):
        writer.write(line.encode() + b"\r\n")
        await asyncio.wait_for(writer.drain(), self.args.reply_timeout)
        return await self.reply(reader)

    async def session(self, first):
        """One SMTP session; returns the message it held if the session failed mid-way."""
        message = first
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        self.counts["sessions"] += 1
        try:
            code, text = await self.reply(reader)
            if code != 220:
                raise Failure(f"greeting: {text}")
            code, text = await self.command(reader, writer, "EHLO soak-client.test")
            if code != 250:
                raise Failure(f"EHLO: {text}")
            sent = 0
            while message is not None:
                if message.first_try is None:
                    message.first_try = time.monotonic()
                message.attempts += 1
                self.counts["attempts"] += 1
                code, text = await self.command(reader, writer, f"MAIL FROM:<{self.args.sender}>")
                if code == 250:
                    code, text = await self.command(reader, writer, f"RCPT TO:<{self.args.recipient}>")
                if code == 250:
                    code, text = await self.command(reader, writer, "DATA")
                    if code == 354:
                        writer.write(self.body(message) + b".\r\n")
                        try:
                            await asyncio.wait_for(writer.drain(), self.args.reply_timeout)
                            code, text = await self.reply(reader)
                        except (Failure, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                            # After the end of DATA: the relay may have taken it.
                            message.unknown += 1
                            self.counts["unknown_outcomes"] += 1
                            raise
                        if code == 250:
                            message.status = "acknowledged"
                            queued = QUEUED.search(text)
                            message.queue_ids.append(queued.group(1) if queued else "")
                            message.reply = text
                            self.counts["acknowledged"] += 1
                            message = None
                    elif code == 250:
                        code = 554  # DATA cannot answer 250
                if message is not None:
                    if code == 421:
                        raise Failure(text)
                    if 400 <= code < 500:
                        self.counts["replies_4xx"] += 1
                        key = re.sub(r"[0-9A-Z]{26}", "ID", text)[:160]
                        if key in self.temporary or len(self.temporary) < 20:
                            self.temporary[key] = self.temporary.get(key, 0) + 1
                        self.retry(message, text)
                    else:
                        message.status = "refused"
                        message.reply = text
                        self.counts["refused"] += 1
                    message = None
                    code, text = await self.command(reader, writer, "RSET")
                    if code != 250:
                        raise Failure(f"RSET: {text}")
                sent += 1
                if sent >= self.args.per_session:
                    break
                message = await self.next_message()
            try:
                writer.write(b"QUIT\r\n")
                await asyncio.wait_for(writer.drain(), 5)
                await asyncio.wait_for(reader.read(), 5)
            except (OSError, asyncio.TimeoutError):
                pass
            return None
        except (Failure, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return message
        finally:
            writer.close()

    async def worker(self):
        backoff = 0.5
        while True:
            message = await self.next_message()
            if message is None:
                return
            try:
                failed = await self.session(message)
                backoff = 0.5
            except (Failure, OSError, asyncio.TimeoutError) as error:  # could not connect
                failed, reason = message, f"connect: {error}"
                message.reply = reason
            if failed is not None:
                self.counts["session_failures"] += 1
                if failed.first_try is None:
                    failed.first_try = time.monotonic()
                self.retry(failed, failed.reply or "connection lost")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 8.0)

    def write_progress(self, done=False):
        state = dict(self.counts, messages=len(self.messages), outstanding=self.outstanding(), done=done,
                     seconds=round(time.monotonic() - self.started, 1), temporary_replies=self.temporary)
        temporary = self.args.progress + ".new"
        with open(temporary, "w") as f:
            json.dump(state, f)
        os.replace(temporary, self.args.progress)
        return state

    async def report_progress(self):
        while True:
            self.write_progress()
            await asyncio.sleep(0.5)

    async def run(self):
        reporter = asyncio.create_task(self.report_progress())
        await asyncio.gather(*(self.worker() for _ in range(self.args.sessions)))
        reporter.cancel()
        with open(self.args.out + ".new", "w") as f:
            for m in self.messages:
                f.write(json.dumps({"id": m.id, "status": m.status, "attempts": m.attempts, "queue_ids": m.queue_ids,
                                    "unknown": m.unknown, "reply": m.reply}) + "\n")
        os.replace(self.args.out + ".new", self.args.out)
        return self.write_progress(done=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--per-session", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=0, help="new messages per second at most (0: as fast as the relay takes them)")
    parser.add_argument("--reply-timeout", type=float, default=60)
    parser.add_argument("--give-up", type=float, default=900)
    parser.add_argument("--from", dest="sender", default="soak@demo.test")
    parser.add_argument("--to", dest="recipient", default="soak@example.com")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    totals = asyncio.run(Sender(args).run())
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
