#!/usr/bin/env python3
"""Which messages the smarthost cluster acknowledged but never relayed: every id an ingress
node logged as queued (with its Kafka partition and offset) that no file in the sink carries in
its Received: line (SINK_DIRs: the sink and where warm-up messages were moved), with the nodes that produced the neighbouring offsets of that partition.
Prints one line per lost message; nothing when none was lost. With several tenants (each its
own topic) a partition is the tenant's, and the line names the tenant.

usage: lost_messages.py RUN_DIR SINK_DIR...
"""
import glob
import os
import re
import sys

QUEUED = re.compile(rb" id=([0-9A-Z]{26}) node=(\S+) offset=(\d+) partition=(\d+) .*\] queued")
TENANT = re.compile(rb" tenant=(\S+)")
RECEIVED = re.compile(rb"\(smarthost\) with \S+ id ([0-9A-Z]{26})")


def main():
    run_dir, sink_dirs = sys.argv[1], sys.argv[2:]
    queued = {}
    by_position = {}
    for path in glob.glob(os.path.join(run_dir, "ingress-*.log")):
        with open(path, "rb") as f:
            for line in f:
                match = QUEUED.search(line)
                if match:
                    identifier, node = match.group(1).decode(), match.group(2).decode()
                    offset, partition = int(match.group(3)), int(match.group(4))
                    tenant = TENANT.search(line)
                    tenant = tenant.group(1).decode() if tenant else ""
                    queued[identifier] = (node, tenant, partition, offset)
                    by_position[(tenant, partition, offset)] = node
    relayed = set()
    for sink_dir in sink_dirs:
        for directory, _, names in os.walk(sink_dir):
            for name in names:
                with open(os.path.join(directory, name), "rb") as f:
                    match = RECEIVED.search(f.read(4096))
                if match:
                    relayed.add(match.group(1).decode())
    tenants = {position[1] for position in queued.values()}
    lost = sorted((position[1], position[2], position[3], identifier, position[0])
                  for identifier, position in queued.items() if identifier not in relayed)
    for tenant, partition, offset, identifier, node in lost:
        before = by_position.get((tenant, partition, offset - 1), "?")
        after = by_position.get((tenant, partition, offset + 1), "?")
        where = f"tenant {tenant} partition {partition}" if len(tenants) > 1 else f"partition {partition}"
        print(f"lost {identifier}: {where} offset {offset}, produced by {node} "
              f"(offset {offset - 1} by {before}, {offset + 1} by {after})")


if __name__ == "__main__":
    main()
