#!/usr/bin/env python3
"""The soak's faults (scripts/soak), injected into a cluster/up cluster while the sender runs.

Each round is, in this order:
  kill ingress   SIGKILL one ingress node (ingress-1 in round 1, ingress-2 in round 2, ...), restarted
  kill delivery  SIGKILL delivery-1, restarted
  stop broker    SIGSTOP Tansu for --pause seconds, then SIGCONT
  kill delivery  SIGKILL every other delivery node in turn, each restarted
  stop redis     SIGSTOP Redis for --pause seconds, then SIGCONT
  kill reconciler SIGKILL the reconciler, restarted
  empty redis    SIGKILL Redis and start it again, empty (the registry, limits and leases gone)
A restart is `cluster/restart --kill NAME` (the command line cluster/up recorded), which returns
once the process answers again; a fault whose process does not come back stops the soak.

Spread over the run: with F faults in all (rounds x kinds), fault k fires once the sender has
acknowledged k/(F+1) of the messages (read from its progress file) and at least --gap seconds
after the previous fault ended. If the sender finishes first, the faults left fire --gap
seconds apart (they then hit delivery and the ledger while the queues drain).

Writes one JSON line per fault to --out (kind, target, acknowledged when it started, seconds
since the soak started and the UTC time, how long it took, ok or the error) and exits 0 when
every fault was carried out, 2 when one was not, 3 when the sender (--sender-pid) ended before
it was done.

usage: soak_faults.py --run-dir DIR --progress FILE --messages N --out FILE
                      [--rounds 1] [--pause 30] [--gap 10] [--ingress 2] [--delivery 2]
                      [--sender-pid PID]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESTART = os.path.join(ROOT, "cluster", "restart")
stopped = []  # pids SIGSTOPped and not yet continued, continued if this script is stopped


def schedule(rounds, ingress, delivery):
    faults = []
    for r in range(rounds):
        faults.append(("kill", f"ingress-{r % ingress + 1}"))
        if delivery >= 1:
            faults.append(("kill", "delivery-1"))
        faults.append(("stop", "tansu"))
        for n in range(2, delivery + 1):
            faults.append(("kill", f"delivery-{n}"))
        faults.append(("stop", "redis"))
        if delivery >= 1:
            faults.append(("kill", "reconciler"))
        faults.append(("empty", "redis"))
    return faults


def progress(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def pid_of(run_dir, name):
    with open(os.path.join(run_dir, f"{name}.pid")) as f:
        return int(f.read().strip())


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def restart(name):
    answer = subprocess.run([RESTART, "--kill", "--timeout", "120", name], capture_output=True, text=True, timeout=300)
    if answer.returncode != 0:
        raise RuntimeError(f"cluster/restart {name} failed ({answer.returncode}): {(answer.stderr or answer.stdout).strip()[-2000:]}")
    return answer.stdout.strip()


def pause(run_dir, name, seconds):
    pid = pid_of(run_dir, name)
    if state(pid) in (None, "Z"):
        raise RuntimeError(f"{name} (pid {pid}) is not running")
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    deadline = time.monotonic() + 2
    while state(pid) not in ("T", "t") and time.monotonic() < deadline:
        time.sleep(0.01)
    if state(pid) not in ("T", "t"):
        raise RuntimeError(f"{name} (pid {pid}) did not stop")
    time.sleep(seconds)  # the fault itself: the process frozen this long
    os.kill(pid, signal.SIGCONT)
    stopped.remove(pid)
    return f"pid {pid} stopped {seconds:g} s"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pause", type=float, default=30)
    parser.add_argument("--gap", type=float, default=10)
    parser.add_argument("--ingress", type=int, default=2)
    parser.add_argument("--delivery", type=int, default=2)
    parser.add_argument("--sender-pid", type=int, help="stop waiting (exit 3) if this process is gone before it is done")
    args = parser.parse_args()

    def on_signal(signum, _frame):
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    faults = schedule(args.rounds, args.ingress, args.delivery)
    started = time.monotonic()
    last_end = started
    with open(args.out, "w") as out:
        for k, (kind, name) in enumerate(faults, start=1):
            threshold = args.messages * k / (len(faults) + 1)
            # Spacing in time: at least --gap after the last fault, and the sender's progress.
            while True:
                now = progress(args.progress)
                gap_over = time.monotonic() - last_end >= args.gap
                if gap_over and (now.get("acknowledged", 0) >= threshold or now.get("done")):
                    break
                if args.sender_pid and state(args.sender_pid) in (None, "Z") and not progress(args.progress).get("done"):
                    print(f"soak: the sender (pid {args.sender_pid}) is gone before it was done; {len(faults) - k + 1} faults not run",
                          file=sys.stderr)
                    sys.exit(3)
                time.sleep(0.2)
            begin = time.monotonic()
            entry = {"fault": k, "kind": kind, "target": name, "acknowledged_at_start": now.get("acknowledged", 0),
                     "sender_done": bool(now.get("done")), "at_seconds": round(begin - started, 1),
                     "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            try:
                if kind == "stop":
                    entry["detail"] = pause(args.run_dir, name, args.pause)
                else:
                    entry["detail"] = restart(name)
                entry["ok"] = True
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as error:
                entry["ok"] = False
                entry["error"] = str(error)
            last_end = time.monotonic()
            entry["seconds"] = round(last_end - begin, 1)
            out.write(json.dumps(entry) + "\n")
            out.flush()
            what = {"kill": "SIGKILL and restart", "stop": "SIGSTOP/SIGCONT", "empty": "SIGKILL and restart empty"}[kind]
            print(f"soak: fault {k}/{len(faults)} at {entry['at_seconds']:.0f} s ({entry['acknowledged_at_start']} acknowledged): "
                  f"{what} {name}: {entry.get('detail') or entry.get('error')}", file=sys.stderr, flush=True)
            if not entry["ok"]:
                sys.exit(2)


if __name__ == "__main__":
    main()
