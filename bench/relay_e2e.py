#!/usr/bin/env python3
"""End-to-end relay throughput: smtp-source sends N messages to a relay (Postfix, or the
smarthost cluster through HAProxy), which relays them to an smtp-sink that writes every message
as one file under SINK_DIR (smtp-sink -d). Prints one JSON line.

The clock starts just before smtp-source starts and stops when the sink has all N messages:
the end is the newest modification time among the N files (the moment the sink wrote the last
one), so the polling interval does not add to the figure. Before the timed load, a warm-up of
one message per session goes through and is waited for (Postfix spawns its daemons, the
delivery nodes join their consumer group); its files are then moved to SINK_DIR-warmup.

If the sink stops receiving for --stall-seconds before it has all N, the messages that did
arrive are counted (relayed_per_second up to the last of them) and the rest reported as
missing.

Also reported: when smtp-source finished (every message accepted), the sink's file count a
second after the target was reached (more than N means something was delivered twice), the
number of distinct Message-Id headers, the machine's CPU busy share over the timed window, and
the CPU seconds each watched process tree used in it (the process, its live descendants, and
the descendants it reaped), as seconds (cpu_seconds, with smtp-source's) and as % of one core.

usage: relay_e2e.py LABEL HOST:PORT SINK_DIR --messages N --sessions S --size BYTES
                    [--watch NAME=PID ...] [--stall-seconds 60] [--log-dir DIR]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def sink_files(directory):
    found = []
    stack = [directory]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(entry.path)
        except FileNotFoundError:
            pass
    return found


def wait_for(directory, target, stall_seconds, what, source=None, slow=0.5, fast=0.1, fatal=True, on_change=None):
    """Polls until the sink holds at least target files. If the count stalls for stall_seconds:
    exits when fatal, else returns what arrived. With a Source, also notes when smtp-source
    exits (it is reaped here). on_change is called whenever the count grew."""
    last, last_change = -1, time.monotonic()
    while True:
        if source is not None:
            source.poll()
        files = sink_files(directory)
        if len(files) >= target:
            return files
        # Scanning costs CPU that the relay would use: seldom while far from the target (the
        # end time comes from the files, not from this loop), often near it.
        interval = fast if len(files) >= target * 0.9 else slow
        if len(files) != last:
            last, last_change = len(files), time.monotonic()
            if on_change is not None:
                on_change()
        elif time.monotonic() - last_change > stall_seconds:
            message = f"relay_e2e: {what}: the sink has {len(files)} of {target} messages and got none in {stall_seconds:g} s"
            if fatal:
                sys.exit(message)
            print(message, file=sys.stderr)
            return files
        time.sleep(interval)


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may hold spaces; fields after it are plain.
    rest = text[text.rindex(")") + 2:].split()
    return rest  # rest[0] is field 3 (state); rest[1] ppid; utime=rest[11], stime=rest[12], cutime=rest[13], cstime=rest[14]


def process_table():
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                table[int(name)] = stat_fields(name)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    return table


def tree_ticks(root, table):
    """CPU ticks of a process, its live descendants, and the children each of them reaped."""
    children = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        fields = table.get(pid)
        if fields is None:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        stack.extend(children.get(pid, []))
    return total


def machine_ticks():
    """(all, idle, steal) ticks of the machine so far; steal is time the hypervisor gave away."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values[:8]), values[3] + values[4], values[7]  # idle + iowait; steal


class Source:
    """One smtp-source run; reaped with wait4 so that its CPU time is known."""

    def __init__(self, server, messages, sessions, size, log_path):
        host, port = server.rsplit(":", 1)
        command = ["smtp-source", "-m", str(messages), "-s", str(sessions), "-l", str(size),
                   "-f", "bench@demo.test", "-t", "sink@example.com", f"{host}:{port}"]
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        Source.running = self
        self.ended = None
        self.cpu_seconds = None
        self.status = None

    running = None  # the one smtp-source under way, stopped if this script is told to stop

    @staticmethod
    def stop_running(signum, _frame):
        source = Source.running
        if source is not None and source.ended is None:
            source.process.kill()
            source.process.wait()
        sys.exit(128 + signum)

    def poll(self, block=False):
        if self.ended is not None:
            return
        pid, status, usage = os.wait4(self.process.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        self.ended = time.time()
        self.status = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.status
        self.cpu_seconds = usage.ru_utime + usage.ru_stime

    def finish(self):
        self.poll(block=True)
        with open(self.log_path) as f:
            output = f.read()
        if self.status != 0:
            sys.exit(f"relay_e2e: smtp-source exited with {self.status}:\n{output[-2000:]}")
        if output:
            print(f"relay_e2e: smtp-source said:\n{output[-2000:]}", file=sys.stderr)


def message_ids(files):
    ids = set()
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                if line.lower().startswith(b"message-id:"):
                    ids.add(line.strip())
                    break
                if line in (b"\n", b"\r\n"):
                    break
    return len(ids)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("label")
    parser.add_argument("server")
    parser.add_argument("sink_dir")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--watch", action="append", default=[], help="NAME=PID, a process tree to report CPU for")
    parser.add_argument("--stall-seconds", type=float, default=60)
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, Source.stop_running)
    signal.signal(signal.SIGINT, Source.stop_running)
    log_dir = args.log_dir or args.sink_dir
    watched = {}
    for item in args.watch:
        name, _, pid = item.partition("=")
        watched[name] = int(pid)

    # Warm-up, then an empty sink.
    already = len(sink_files(args.sink_dir))
    if already:
        sys.exit(f"relay_e2e: {args.sink_dir} already holds {already} files")
    warmup = Source(args.server, args.sessions, args.sessions, args.size, os.path.join(log_dir, "smtp-source-warmup.log"))
    warmup.finish()
    warmup_dir = args.sink_dir.rstrip("/") + "-warmup"
    os.makedirs(warmup_dir, exist_ok=True)
    # A warm-up message that never arrives is counted (warmup_missing) and the run goes on.
    arrived = wait_for(args.sink_dir, args.sessions, min(args.stall_seconds, 20), "warm-up", slow=0.05, fatal=False)
    for path in arrived:
        os.rename(path, os.path.join(warmup_dir, os.path.basename(path)))
    warmup_missing = args.sessions - len(arrived)

    # The timed load. CPU is counted from its start to the last poll that saw the sink grow.
    def snapshot():
        table = process_table()
        return (machine_ticks(), os.times(), time.time(), {name: tree_ticks(pid, table) for name, pid in watched.items()})

    machine_before, self_before, start, before = snapshot()
    last_growth = [None]
    source = Source(args.server, args.messages, args.sessions, args.size, os.path.join(log_dir, "smtp-source.log"))
    # Messages that never arrive are reported (missing), not waited for forever; the figures
    # then cover the messages that did arrive, up to the last of them.
    files = wait_for(args.sink_dir, args.messages, args.stall_seconds, args.label, source, fatal=False,
                     on_change=lambda: last_growth.__setitem__(0, snapshot()))
    if len(files) >= args.messages or last_growth[0] is None:
        last_growth[0] = snapshot()
    machine_after, self_after, polled, after = last_growth[0]
    window = max(polled - start, 1e-3)
    end = max(os.stat(path).st_mtime for path in files) if files else time.time()
    source.finish()
    time.sleep(1)
    files_after = sink_files(args.sink_dir)
    relay_seconds = end - start
    busy_total = machine_after[0] - machine_before[0]
    busy = 1 - (machine_after[1] - machine_before[1]) / busy_total if busy_total else 0.0
    seconds = {name: (after[name] - before[name]) / TICK for name in watched}
    seconds["smtp-source"] = source.cpu_seconds
    cpu = {name: round(seconds[name] / window * 100) for name in watched}
    cpu["smtp-source"] = round(source.cpu_seconds / window * 100)
    cpu["this probe"] = round((self_after.user + self_after.system - self_before.user - self_before.system) / window * 100)
    # Whatever else ran on the machine in the window (the kernel's softirq work, other users).
    machine_busy = (busy_total - (machine_after[1] - machine_before[1])) / TICK / window * 100
    steal = (machine_after[2] - machine_before[2]) / TICK / window * 100
    cpu["everything else"] = max(0, round(machine_busy - steal - sum(cpu.values())))
    cpu["stolen by the hypervisor"] = round(steal)
    print(json.dumps({
        "target": args.label,
        "messages": args.messages,
        "relay_seconds": round(relay_seconds, 3),
        "relayed_per_second": round(len(files) / relay_seconds, 1),
        "missing": args.messages - len(files),
        "warmup_missing": warmup_missing,
        "accept_seconds": round(source.ended - start, 3),
        "accepted_per_second": round(args.messages / (source.ended - start), 1),
        "sink_files_after_1s": len(files_after),
        "distinct_message_ids": message_ids(files_after),
        "machine_busy_percent": round(busy * 100),
        "cpu_percent_of_one_core": cpu,
        "cpu_window_seconds": round(window, 3),
        "cpu_seconds": {name: round(value, 3) for name, value in seconds.items()},
    }))


if __name__ == "__main__":
    main()
