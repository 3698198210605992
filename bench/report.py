#!/usr/bin/env python3
"""Prints scripts/bench's figures from the files its steps left in RESULTS_DIR:
ingress-sink.json and ingress.json (ingress acceptance), ingress-rss.txt, e2e.jsonl (one line
per end-to-end round and target, from bench/relay_e2e.py) and lost.txt (bench/lost_messages.py).
Exits 2 when a round lost messages, else 0.

usage: report.py RESULTS_DIR
"""
import json
import os
import statistics
import sys

from cpu_budget import ordered, per_message_us


def read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def main():
    results = sys.argv[1]
    sink, ingress = read(os.path.join(results, "ingress-sink.json")), read(os.path.join(results, "ingress.json"))
    if sink and ingress:
        sink, ingress = json.loads(sink), json.loads(ingress)
        print("ingress acceptance (no delivery nodes running):")
        print(f"  {'target':38} {'smtp-source msg/s':>18} {'probe msg/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
        for row in (sink, ingress):
            print(f"  {row['target']:38} {row['smtp_source_per_second']:>18} {row['probe_per_second']:>12} "
                  f"{row['p50_ms']:>8} {row['p99_ms']:>8}")
        print(f"  ingress / sink (smtp-source): {ingress['smtp_source_per_second'] / sink['smtp_source_per_second']:.2f}  "
              f"(probe: {ingress['probe_per_second'] / sink['probe_per_second']:.2f})")
        print(f"  ingress nodes: {'; '.join((read(os.path.join(results, 'ingress-rss.txt')) or '').splitlines())}")

    sweep = read(os.path.join(results, "sweep.json"))
    if sweep:
        sweep = json.loads(sweep)
        print(f"orphan sweep over {sweep['messages']:,} spooled messages ({sweep['planted_orphans']:,} planted orphans; "
              f"no peer MTA has one to compare with):")
        print(f"  first sweep {sweep['sweep_ms']:,} ms ({sweep['us_per_message']:.2f} us per message), "
              f"{sweep['orphans_found']:,} orphans found and requeued; second sweep {sweep['second_sweep_ms']:,} ms, "
              f"{sweep['second_orphans_found']} found")
        print(f"  queue manager wait while sweeping: max {sweep['max_stall_ms']} ms, p99 {sweep['p99_stall_ms']} ms "
              f"({sweep['probes']:,} probes); second sweep max {sweep['second_max_stall_ms']} ms; RSS {sweep['rss_mib']} MiB")

    rows = [json.loads(line) for line in (read(os.path.join(results, "e2e.jsonl")) or "").splitlines()]
    if not rows:
        return 0
    targets = list(dict.fromkeys(row["target"] for row in rows))
    rounds = max(row["round"] for row in rows)
    print(f"end to end (smtp-source start to the sink holding every message), {rows[0]['messages']} messages:")
    print(f"  {'round':>5} {'target':52} {'relayed msg/s':>14} {'accepted msg/s':>15} {'seconds':>8} {'machine busy':>13}")
    problems = []
    for row in rows:
        print(f"  {row['round']:>5} {row['target']:52} {row['relayed_per_second']:>14} {row['accepted_per_second']:>15} "
              f"{row['relay_seconds']:>8} {str(row['machine_busy_percent']) + ' %':>13}")
        cpu = ", ".join(f"{name} {value}" for name, value in
                        sorted(row["cpu_percent_of_one_core"].items(), key=lambda item: -item[1]))
        print(f"        CPU % of one core: {cpu}")
        budget = ", ".join(f"{name} {value:,.0f}" for name, value in ordered(per_message_us(row)))
        print(f"        CPU us per message by kind: {budget}")
        if row["missing"]:
            problems.append(f"round {row['round']}, {row['target']}: {row['missing']} messages never reached the sink "
                            f"(its rate counts those that did)")
        if row.get("warmup_missing"):
            problems.append(f"round {row['round']}, {row['target']}: {row['warmup_missing']} warm-up messages never reached the sink")
        if row["sink_files_after_1s"] != row["messages"] - row["missing"]:
            problems.append(f"round {row['round']}, {row['target']}: {row['sink_files_after_1s']} files in the sink a second later")
        if row["distinct_message_ids"] != row["sink_files_after_1s"]:
            problems.append(f"round {row['round']}, {row['target']}: {row['distinct_message_ids']} distinct Message-Ids "
                            f"in {row['sink_files_after_1s']} files")
    medians = {target: statistics.median(row["relayed_per_second"] for row in rows if row["target"] == target)
               for target in targets}
    if rounds > 1:
        for target in targets:
            print(f"  median of {rounds} rounds, {target}: {medians[target]:.1f} msg/s")
    postfix = next((target for target in targets if target.startswith("Postfix")), None)
    smarthost = next((target for target in targets if target.startswith("smarthost")), None)
    if postfix and smarthost:
        label = "medians" if rounds > 1 else "relayed msg/s"
        print(f"  smarthost / Postfix ({label}): {medians[smarthost] / medians[postfix]:.2f}")
    print("  durability: Postfix fsyncs each queue file before its 250; the delivery spool fsyncs too (SQLite WAL,")
    print("  group commit); Tansu, the Kafka broker here, keeps its log in memory only: the smarthost's Kafka hop is")
    print("  not durable.")
    redis = read(os.path.join(results, "redis.txt"))
    if redis:
        print("smarthost: Redis commands per delivered message (cluster-wide limits on every site, INFO commandstats):")
        print("\n".join("  " + line for line in redis.splitlines()))
    lost = read(os.path.join(results, "lost.txt"))
    for problem in problems:
        print(f"WARNING: {problem}")
    if lost:
        print("smarthost: acknowledged by Kafka (offset logged by the ingress node) but never delivered:")
        print("\n".join("  " + line for line in lost.splitlines()))
    return 2 if lost or any(row["missing"] or row.get("warmup_missing") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
