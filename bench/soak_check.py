#!/usr/bin/env python3
"""The soak's verdict (scripts/soak): which acknowledged messages reached the sink, how many
arrived more than once, and what the cluster ledger says.

1. Waits until the sink holds a complete copy (the `soak-end ID` trailer) of every message the
   sender recorded as acknowledged, or until no new copy arrived for --stall-seconds, or
   --deadline seconds have passed.
2. Asks the reconciler (`smarthostctl --config CONFIG ledger --now --format json`) until the
   ledger counts nothing queued (or --ledger-deadline seconds have passed; a question that
   fails, e.g. while the registry in Redis is being rebuilt, is asked again).
3. Counts the sink once more and prints: acknowledged, delivered (distinct X-Soak-Id with a
   complete copy), lost (acknowledged, no complete copy), duplicated (ids with two or more
   complete copies: `cluster` when one relay id, the "queued as" id, was delivered twice;
   `client retry` when the relay accepted the message twice because the sender did not see a
   250 and sent it again), the ledger's verdict and its own duplicate count. Every lost
   message is named with its relay ids and the log lines that mention them.

The ledger's JSON is read by key: `balances` and `imbalance` when the report has them,
otherwise the balance is computed from `totals` and `queued_recipients` as Ledger.swift does;
`unspooled_records` (Kafka records below the delivery group's committed offset that no spool
took), or any other top-level list or count whose key names gaps or unspooled records, is
reported when not empty and counts against the balance. When acknowledged messages are missing
at the sink, the ledger is asked until it names such records or --settle-seconds have passed
since the sender finished (it names a record only once it is older than unaccounted_after).

Writes everything to --summary (JSON) and exits 1 when an acknowledged message is lost or the
ledger does not balance (or could not be read), 0 otherwise.

usage: soak_check.py --run-dir DIR --sent FILE --sink-dir DIR [--sink-dir DIR ...] --ctl PATH
                     --config FILE --summary FILE [--sender-totals FILE] [--faults FILE]
                     [--stall-seconds 120] [--deadline 1800] [--ledger-deadline 300]
                     [--settle-seconds 150] [--extra JSON]
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

SOAK_ID = re.compile(rb"^X-Soak-Id: (\S+)", re.MULTILINE | re.IGNORECASE)
RELAY_ID = re.compile(rb"\(smarthost\) with \S+ id ([0-9A-Z]{26})")


class Sink:
    """Every file under the sink directories, read once it is complete (files without the
    trailer are read again at the next scan: smtp-sink writes a message as it arrives)."""

    def __init__(self, directories):
        self.directories = directories
        self.complete = {}  # path -> (soak id, relay id)
        self.partial = {}  # path -> soak id or None
        self.others = 0  # files that are no soak message (nothing else should arrive)

    def scan(self):
        for directory in self.directories:
            for root, _, names in os.walk(directory):
                for name in names:
                    path = os.path.join(root, name)
                    if path in self.complete:
                        continue
                    try:
                        with open(path, "rb") as f:
                            data = f.read()
                    except OSError:
                        continue
                    soak = SOAK_ID.search(data)
                    if not soak:
                        self.partial[path] = None
                        continue
                    soak_id = soak.group(1).decode()
                    if (b"soak-end " + soak.group(1)) in data:
                        relay = RELAY_ID.search(data)
                        self.complete[path] = (soak_id, relay.group(1).decode() if relay else "")
                        self.partial.pop(path, None)
                    else:
                        self.partial[path] = soak_id
        return len(self.complete)

    def copies(self):
        """soak id -> [relay id of each complete copy]."""
        found = {}
        for soak_id, relay_id in self.complete.values():
            found.setdefault(soak_id, []).append(relay_id)
        return found


def wait_for_sink(sink, acknowledged, stall_seconds, deadline):
    started = last_change = time.monotonic()
    count = -1
    while True:
        now_count = sink.scan()
        copies = sink.copies()
        missing = sum(1 for soak_id in acknowledged if soak_id not in copies)
        if missing == 0:
            return "every acknowledged message arrived", time.monotonic() - started
        if now_count != count:
            count, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > stall_seconds:
            return f"no new message at the sink for {stall_seconds:g} s, {missing} acknowledged still missing", time.monotonic() - started
        if time.monotonic() - started > deadline:
            return f"deadline of {deadline:g} s passed, {missing} acknowledged still missing", time.monotonic() - started
        time.sleep(1 if missing > 1000 else 0.3)


def ask_ledger(ctl, config):
    try:
        answer = subprocess.run([ctl, "ledger", "--config", config, "--now", "--format", "json"],
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "smarthostctl ledger --now took more than 120 s"
    if answer.returncode != 0:
        return None, (answer.stderr or answer.stdout).strip()[-500:]
    try:
        return json.loads(answer.stdout), None
    except ValueError as error:
        return None, f"not JSON ({error}): {answer.stdout[:200]}"


def wait_for_ledger(ctl, config, deadline, settle_until):
    """Until nothing is queued; and, when settle_until is given (messages are missing at the
    sink), until the ledger names a gap or that moment has passed (the ledger names a record
    no spool took only once it is older than unaccounted_after)."""
    started = time.monotonic()
    report, error, asked = None, None, 0
    while True:
        asked += 1
        answer, problem = ask_ledger(ctl, config)
        if answer is not None:
            report, error = answer, None
            settled = settle_until is None or gap_fields(answer) or time.monotonic() >= settle_until
            if answer.get("queued_recipients", 0) == 0 and settled:
                return report, None, asked, time.monotonic() - started
        else:
            error = problem
        if time.monotonic() - started > deadline:
            if report is None:
                return None, error, asked, time.monotonic() - started
            return report, f"still {report.get('queued_recipients')} recipients queued after {deadline:g} s", asked, time.monotonic() - started
        time.sleep(2)


def gap_fields(report):
    """Top-level entries about gaps (Kafka records no spool took: `unspooled_records`) that are not empty."""
    found = {}
    for key, value in report.items():
        if "gap" not in key.lower() and "unspooled" not in key.lower():
            continue
        if isinstance(value, (list, dict)) and value:
            found[key] = len(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            found[key] = value
    return found


def ledger_verdict(report):
    """(holds, reason) as the report says, or computed as Ledger.swift does."""
    totals = report.get("totals") or {}
    reasons = []
    if isinstance(report.get("balances"), bool):
        holds = report["balances"]
        if not holds:
            reasons.append(report.get("imbalance") or "the report says it does not balance")
    else:
        outcomes = sum(int(totals.get(key, 0)) for key in ("delivered", "bounced", "expired", "deleted"))
        queued = int(report.get("queued_recipients", 0))
        accepted = int(totals.get("accepted_recipients", 0))
        without = report.get("without_reception") or []
        holds = accepted == outcomes + queued and not without  # unspooled records: gap_fields below
        if not holds:
            if report.get("unaccounted_recipients"):
                reasons.append(f"{report['unaccounted_recipients']} recipients in no spool")
            if report.get("unconfirmed_recipients"):
                reasons.append(f"{report['unconfirmed_recipients']} recipients unconfirmed, {len(report.get('unanswered') or {})} nodes not answering")
            if without:
                reasons.append(f"{len(without)} messages with outcomes and no Reception")
            rest = accepted - outcomes - queued - int(report.get("unaccounted_recipients", 0)) - int(report.get("unconfirmed_recipients", 0))
            if rest:
                reasons.append(f"{rest} recipients in no row")
    gaps = gap_fields(report)
    if gaps:
        holds = False
        reasons.append("gaps: " + ", ".join(f"{key} {value}" for key, value in gaps.items()))
    return holds, "; ".join(reasons) or None


def log_lines(run_dir, needles, limit=20):
    """Lines of the cluster's logs that mention any of needles, per needle."""
    found = {needle: [] for needle in needles}
    if not needles:
        return found
    for path in sorted(glob.glob(os.path.join(run_dir, "*.log"))):
        name = os.path.basename(path)
        with open(path, errors="replace") as f:
            for line in f:
                for needle in needles:
                    if needle in line and len(found[needle]) < limit:
                        found[needle].append(f"{name}: {line.rstrip()[:400]}")
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--sent", required=True)
    parser.add_argument("--sink-dir", action="append", required=True)
    parser.add_argument("--ctl", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--sender-totals")
    parser.add_argument("--faults")
    parser.add_argument("--stall-seconds", type=float, default=120)
    parser.add_argument("--deadline", type=float, default=1800)
    parser.add_argument("--ledger-deadline", type=float, default=300)
    parser.add_argument("--settle-seconds", type=float, default=150,
                        help="with messages missing, how long after the start to let the ledger name them")
    parser.add_argument("--extra", default="{}", help="JSON object merged into the summary")
    args = parser.parse_args()

    sent = {}
    with open(args.sent) as f:
        for line in f:
            entry = json.loads(line)
            sent[entry["id"]] = entry
    acknowledged = {soak_id for soak_id, entry in sent.items() if entry["status"] == "acknowledged"}
    by_status = {}
    for entry in sent.values():
        by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1

    checker_started = time.monotonic()
    sink = Sink(args.sink_dir)
    sink_wait, sink_seconds = wait_for_sink(sink, acknowledged, args.stall_seconds, args.deadline)
    print(f"soak: sink: {sink_wait} ({sink_seconds:.0f} s)", file=sys.stderr)
    arrived = sink.copies()
    missing_now = sum(1 for soak_id in acknowledged if soak_id not in arrived)
    settle_until = checker_started + args.settle_seconds if missing_now else None
    report, ledger_problem, asked, ledger_seconds = wait_for_ledger(args.ctl, args.config, args.ledger_deadline, settle_until)
    print(f"soak: ledger: {'asked ' + str(asked) + ' times' if ledger_problem is None else ledger_problem} ({ledger_seconds:.0f} s)",
          file=sys.stderr)
    sink.scan()  # late copies (a redelivery after a restart) have had the ledger's wait to arrive
    copies = sink.copies()

    delivered = {soak_id for soak_id in acknowledged if soak_id in copies}
    lost = sorted(acknowledged - delivered, key=lambda s: int(s.rsplit("-", 1)[1]))
    unacknowledged_delivered = sorted(soak_id for soak_id in copies if soak_id not in acknowledged)
    duplicated = {soak_id: relays for soak_id, relays in copies.items() if len(relays) > 1}
    cluster_duplicates = sorted(soak_id for soak_id, relays in duplicated.items() if len(set(relays)) < len(relays))
    client_duplicates = sorted(soak_id for soak_id, relays in duplicated.items() if len(set(relays)) == len(relays))
    relay_to_soak = {}
    for soak_id, relays in copies.items():
        for relay in relays:
            relay_to_soak[relay] = soak_id
    for soak_id, entry in sent.items():
        for relay in entry["queue_ids"]:
            relay_to_soak.setdefault(relay, soak_id)

    # The evidence for each lost message: its relay ids, the log lines and ledger rows naming them.
    lost_named = lost[:50]
    relay_ids = {relay for soak_id in lost_named for relay in sent[soak_id]["queue_ids"] if relay}
    lines = log_lines(args.run_dir, sorted(relay_ids | set(lost_named)))
    ledger_text = json.dumps(report) if report else ""
    lost_evidence = []
    for soak_id in lost_named:
        entry = sent[soak_id]
        rows = []
        if report:
            for key in ("unaccounted", "unconfirmed", "without_reception"):
                rows += [dict(row, list=key) for row in report.get(key) or [] if row.get("id") in entry["queue_ids"]]
        lost_evidence.append({"id": soak_id, "queue_ids": entry["queue_ids"], "attempts": entry["attempts"], "reply": entry["reply"],
                              "in_ledger_json": any(relay and relay in ledger_text for relay in entry["queue_ids"]),
                              "ledger_rows": rows,
                              "log_lines": [line for needle in entry["queue_ids"] + [soak_id] for line in lines.get(needle, [])]})

    if report is not None:
        holds, reason = ledger_verdict(report)
        if ledger_problem:
            holds, reason = False, "; ".join(filter(None, [ledger_problem, reason]))
        totals = report.get("totals") or {}
        ledger_duplicates = report.get("duplicates") or []
        ledger = {
            "balances": holds, "reason": reason,
            "accepted_messages": totals.get("accepted_messages"), "accepted_recipients": totals.get("accepted_recipients"),
            "delivered": totals.get("delivered"), "bounced": totals.get("bounced"), "expired": totals.get("expired"),
            "deleted": totals.get("deleted"), "queued_recipients": report.get("queued_recipients"),
            "unaccounted_recipients": report.get("unaccounted_recipients"), "unconfirmed_recipients": report.get("unconfirmed_recipients"),
            "without_reception": len(report.get("without_reception") or []),
            "duplicate_messages": totals.get("duplicate_messages"), "duplicate_outcomes": totals.get("duplicate_outcomes"),
            "resent_outcomes": totals.get("resent_outcomes") or 0,
            "duplicates_named": [dict(d, soak_id=relay_to_soak.get(d.get("id"))) for d in ledger_duplicates[:200]],
            "gaps": gap_fields(report),
            "unspooled_records": (report.get("unspooled_records") or [])[:200],
            "records_unchecked": report.get("records_unchecked"),
            "quarantined": len(report.get("quarantined") or []),
            "unanswered": report.get("unanswered") or {},
            "asked": asked,
        }
    else:
        ledger = {"balances": False, "reason": f"the ledger could not be read: {ledger_problem}", "asked": asked}

    # The ledger's duplicates against the sink: a relay id delivered twice there, or an outcome
    # event repeated for a message the sink holds once; and the sink's the ledger does not name.
    relay_copies = {}
    for relays in copies.values():
        for relay in relays:
            relay_copies[relay] = relay_copies.get(relay, 0) + 1
    ledger_named = {d.get("id") for d in (report or {}).get("duplicates") or []}
    ledger_vs_sink = {
        "named_by_ledger": len(ledger_named),
        "named_and_twice_at_sink": sorted(r for r in ledger_named if relay_copies.get(r, 0) > 1),
        "named_but_once_at_sink": sorted(r for r in ledger_named if relay_copies.get(r, 0) == 1),
        "twice_at_sink_not_named": sorted(r for r, n in relay_copies.items() if n > 1 and r not in ledger_named),
    }
    distinct_relays_delivered = len({relay for relays in copies.values() for relay in relays})
    summary = {
        "messages": len(sent),
        "sender": by_status,
        "acknowledged": len(acknowledged),
        "delivered": len(delivered),
        "lost": len(lost),
        "lost_ids": lost,
        "lost_evidence": lost_evidence,
        "duplicated": len(duplicated),
        "duplicated_percent": round(100 * len(duplicated) / len(delivered), 3) if delivered else 0.0,
        "duplicated_cluster": cluster_duplicates,
        "duplicated_client_retry": client_duplicates,
        "duplicate_copies": {soak_id: relays for soak_id, relays in sorted(duplicated.items())},
        "delivered_unacknowledged": len(unacknowledged_delivered),
        "delivered_unacknowledged_ids": unacknowledged_delivered[:1000],
        "sink_files_complete": len(sink.complete),
        "sink_files_partial": len(sink.partial),
        "sink_distinct_relay_ids": distinct_relays_delivered,
        "sink_wait": sink_wait, "sink_wait_seconds": round(sink_seconds, 1),
        "ledger_wait_seconds": round(ledger_seconds, 1),
        "ledger": ledger,
        "ledger_duplicates_vs_sink": ledger_vs_sink,
        "ledger_report": report,
    }
    if args.sender_totals and os.path.exists(args.sender_totals):
        with open(args.sender_totals) as f:
            summary["sender_totals"] = json.load(f)
    if args.faults and os.path.exists(args.faults):
        with open(args.faults) as f:
            summary["faults"] = [json.loads(line) for line in f if line.strip()]
    summary.update(json.loads(args.extra))
    summary["ok"] = not lost and ledger["balances"]
    with open(args.summary + ".new", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    os.replace(args.summary + ".new", args.summary)

    def ids(values, limit=20):
        shown = ", ".join(values[:limit])
        return shown + (f" (+{len(values) - limit} more in the summary)" if len(values) > limit else "")

    print(f"messages       {len(sent)} sent: " + ", ".join(f"{count} {status}" for status, count in sorted(by_status.items())))
    print(f"acknowledged   {len(acknowledged)}")
    print(f"delivered      {len(delivered)} distinct at the sink (X-Soak-Id, complete copy)")
    print(f"lost           {len(lost)}" + (f": {ids(lost)}" if lost else ""))
    print(f"duplicated     {len(duplicated)} ({summary['duplicated_percent']}% of delivered): "
          f"{len(cluster_duplicates)} delivered twice by the cluster, {len(client_duplicates)} accepted twice after a client retry"
          + (f"\n               cluster: {ids(cluster_duplicates)}" if cluster_duplicates else "")
          + (f"\n               client retry: {ids(client_duplicates)}" if client_duplicates else ""))
    if unacknowledged_delivered:
        print(f"also           {len(unacknowledged_delivered)} delivered that the sender never saw acknowledged: {ids(unacknowledged_delivered, 10)}")
    if sink.partial:
        print(f"also           {len(sink.partial)} incomplete files at the sink (a delivery cut off mid-message)")
    if ledger.get("accepted_messages") is not None:
        print(f"ledger         {ledger['accepted_messages']} messages accepted, {ledger['delivered']} recipients delivered, "
              f"{ledger['queued_recipients']} queued, {ledger['unaccounted_recipients']} unaccounted, "
              f"{ledger['duplicate_messages']} duplicated messages ({ledger['duplicate_outcomes']} repeated outcomes; "
              f"{ledger['resent_outcomes']} outcome events read twice, not counted)")
        if ledger_named or ledger_vs_sink["twice_at_sink_not_named"]:
            print(f"               of the ledger's {len(ledger_named)} duplicates, {len(ledger_vs_sink['named_and_twice_at_sink'])} are at the sink twice, "
                  f"{len(ledger_vs_sink['named_but_once_at_sink'])} once (an outcome reported twice); "
                  f"{len(ledger_vs_sink['twice_at_sink_not_named'])} relay ids at the sink twice are not named by the ledger")
        if ledger["delivered"] is not None and ledger["delivered"] != distinct_relays_delivered:
            print(f"note           the ledger counts {ledger['delivered']} delivered, the sink holds {distinct_relays_delivered} distinct relay ids")
    if ledger.get("records_unchecked"):
        print(f"note           the ledger could not compare the Kafka records with the spools: {ledger['records_unchecked']}")
    if ledger.get("unspooled_records"):
        print(f"unspooled      {len(report.get('unspooled_records') or [])} Kafka records no spool took: "
              + ", ".join(row.get("record", "?") for row in ledger["unspooled_records"][:20]))
    print("balance        " + ("holds" if ledger["balances"] else f"DOES NOT HOLD ({ledger['reason']})"))
    for evidence in lost_evidence:
        print(f"LOST {evidence['id']}: relay ids {', '.join(evidence['queue_ids']) or '-'}; "
              f"{'named' if evidence['in_ledger_json'] else 'not named'} in the ledger")
        for line in evidence["log_lines"][:8]:
            print(f"    {line}")
    print(f"summary        {args.summary}")
    print("soak: " + ("PASSED" if summary["ok"] else "FAILED"))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
