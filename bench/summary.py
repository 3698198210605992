#!/usr/bin/env python3
"""The side-by-side figures of a scripts/bench run, one row per metric: the smarthost's figure,
its peer's (a bare smtp-sink for ingress acceptance, a private Postfix end to end) and the ratio
smarthost / peer. Read from the files the steps left in RESULTS_DIR (ingress-sink.json,
ingress.json, e2e.jsonl, redis.jsonl, lost.txt, sweep.json); a step that did not run has no row.
With several end-to-end rounds the figures are medians. Prints a table, or with --json the rows
as JSON (scripts/bench writes that to RESULTS_DIR/summary.json).
Exits 1 when RESULTS_DIR holds no figures.

usage: summary.py [--json] RESULTS_DIR
"""
import json
import os
import statistics
import sys

from cpu_budget import per_message_us

# Lines that are not the relay or its sink in relay_e2e.py's CPU figures.
NOT_THE_RELAY = {"smtp-source", "this probe", "everything else", "stolen by the hypervisor"}


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f.read().splitlines() if line.strip()]


def row(metric, smarthost, peer=None, peer_name=None, unit="", better="higher", digits=1, note=None):
    ratio = round(smarthost / peer, 2) if isinstance(peer, (int, float)) and peer else None
    return {"metric": metric, "unit": unit, "better": better, "smarthost": round(smarthost, digits),
            "peer": round(peer, digits) if isinstance(peer, (int, float)) else None, "peer_name": peer_name,
            "ratio": ratio, "note": note}


def rows(results):
    found = []
    sink, ingress = read_json(os.path.join(results, "ingress-sink.json")), read_json(os.path.join(results, "ingress.json"))
    if sink and ingress:
        peer = "bare smtp-sink"
        found += [
            row("ingress acceptance (smtp-source)", ingress["smtp_source_per_second"], sink["smtp_source_per_second"], peer,
                "msg/s", digits=0),
            row("ingress acceptance (latency probe)", ingress["probe_per_second"], sink["probe_per_second"], peer, "msg/s",
                digits=0),
            row("DATA-to-250 latency p50", ingress["p50_ms"], sink["p50_ms"], peer, "ms", "lower", 2),
            row("DATA-to-250 latency p99", ingress["p99_ms"], sink["p99_ms"], peer, "ms", "lower", 2),
        ]

    e2e = [json.loads(line) for line in read_lines(os.path.join(results, "e2e.jsonl"))]
    if e2e:
        def median(prefix, figure):  # of the rounds that have the figure
            values = [value for value in (figure(row) for row in e2e if row["target"].startswith(prefix)) if value is not None]
            return statistics.median(values) if values else None

        def cpu_ms(row):  # CPU of the relay's processes and its sink per relayed message
            seconds = sum(value for name, value in row["cpu_percent_of_one_core"].items() if name not in NOT_THE_RELAY) \
                / 100 * row["relay_seconds"]
            return seconds * 1000 / max(row["messages"] - row["missing"], 1)

        rounds = max(row["round"] for row in e2e)
        note = f"end to end: medians of {rounds} rounds" if rounds > 1 else None
        tenants = max(row.get("tenants", 1) for row in e2e)  # scripts/bench --tenants
        if tenants > 1:
            note = (f"{note}, " if note else "end to end: ") + f"the smarthost's load over {tenants:,} tenants (a topic each)"
        peer = "Postfix 3.7"
        for metric, figure, unit, better, digits in (
                ("end to end, relayed", lambda row: row["relayed_per_second"], "msg/s", "higher", 0),
                ("end to end, accepted", lambda row: row["accepted_per_second"], "msg/s", "higher", 0),
                ("CPU per relayed message (relay and its sink)", cpu_ms, "ms", "lower", 2)):
            smarthost = median("smarthost", figure)
            if smarthost is not None:
                found.append(row(metric, smarthost, median("Postfix", figure), peer, unit, better, digits, note))
        # CPU per message of our own nodes (ingress + delivery + reconciler) against Postfix's own
        # processes (its master's tree), from the same run; brokers, balancers and sinks apart.
        def budget(kind):
            return lambda row: per_message_us(row).get(kind)

        ours, postfix = median("smarthost", budget("our nodes")), median("Postfix", budget("postfix"))
        peer_processes = "Postfix's own processes"
        for metric, kind in (("our nodes' CPU per relayed message", "our nodes"),
                             ("ingress CPU per accepted message", "ingress"),
                             ("delivery CPU per delivered message", "delivery"),
                             ("reconciler CPU per relayed message", "reconciler")):
            smarthost = median("smarthost", budget(kind))
            if smarthost is not None:
                found.append(row(metric, smarthost, postfix, peer_processes, "us", "lower", 0, note))
        if ours:
            found.append(row("messages per CPU-second of our nodes (throughput per core)", 1e6 / ours,
                             1e6 / postfix if postfix else None, peer_processes, "msg/s", "higher", 0, note))
        lost = len(read_lines(os.path.join(results, "lost.txt")))
        never = {prefix: sum(row["missing"] + row.get("warmup_missing", 0) for row in e2e if row["target"].startswith(prefix))
                 for prefix in ("smarthost", "Postfix")}
        found.append(row(f"messages never delivered ({rounds} round{'s' if rounds > 1 else ''})",
                         max(never["smarthost"], lost), never["Postfix"] if median("Postfix", len) is not None else None,
                         peer, "messages", "lower", 0, note))

    redis = [json.loads(line) for line in read_lines(os.path.join(results, "redis.jsonl"))]
    if redis:
        per_message = statistics.median(entry["commands"] / entry["messages"] for entry in redis)
        found.append(row("Redis commands per message (cluster-wide limits)", per_message, unit="", better="lower",
                         digits=3, note="Postfix's limits hold per instance: it has no shared store to ask"))

    sweep = read_json(os.path.join(results, "sweep.json"))
    if sweep:
        note = "no peer has a sweep: KumoMTA and Postfix keep no second record of what should be queued"
        found += [
            row(f"orphan sweep over {sweep['messages']:,} spooled messages", sweep["sweep_ms"], unit="ms", better="lower",
                digits=0, note=note),
            row("orphan sweep per spooled message", sweep["us_per_message"], unit="us", better="lower", digits=2, note=note),
            row("queue manager wait while sweeping, max", sweep["max_stall_ms"], unit="ms", better="lower", digits=1, note=note),
            row(f"orphans found of {sweep['planted_orphans']:,} planted", sweep["orphans_found"], unit="messages", digits=0,
                note=note),
        ]
    return found


def number(value):
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,}"
    return f"{int(value):,}"


def table(found):
    lines = [("metric", "smarthost", "peer", "ratio")]
    for entry in found:
        metric = entry["metric"] + (f", {entry['unit']}" if entry["unit"] not in ("", "messages") else "")
        peer = f"{number(entry['peer'])} ({entry['peer_name']})" if entry["peer"] is not None \
            else ("none" if entry["peer_name"] is None else f"not run ({entry['peer_name']})")
        lines.append((metric, number(entry["smarthost"]), peer, "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}"))
    widths = [max(len(line[column]) for line in lines) for column in range(4)]
    out = []
    for index, line in enumerate(lines):
        cells = [value.ljust(width) if column == 0 else value.rjust(width)
                 for column, (value, width) in enumerate(zip(line, widths))]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("| " + " | ".join("-" * widths[0] if column == 0 else "-" * (width - 1) + ":"
                                         for column, width in enumerate(widths)) + " |")
    notes = list(dict.fromkeys(entry["note"] for entry in found if entry["note"]))
    out.append("ratio = smarthost / peer; for ms, us, Redis commands and losses lower is better")
    out += [f"  {note}" for note in notes]
    return "\n".join(out)


def main():
    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    arguments = [argument for argument in arguments if argument != "--json"]
    if len(arguments) != 1 or arguments[0].startswith("-"):
        sys.exit("usage: summary.py [--json] RESULTS_DIR")
    found = rows(arguments[0])
    if as_json:
        print(json.dumps({"results_dir": arguments[0], "rows": found}, indent=2))
    elif found:
        print(table(found))
    if not found:
        print(f"summary: no benchmark figures in {arguments[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
