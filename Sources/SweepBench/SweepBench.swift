import Delivery
import Foundation
import Logging
import Operations
import QueueRecord
import Reconciliation
import SMTPProtocol
import SmarthostConfig
import Spool

/// `sweep-bench [messages] [directory]`: the cost of a delivery node's orphan sweep. Fills a
/// spool with `messages` (default 1,000,000), queues all but 1% of them (due tomorrow, so
/// nothing is sent), then sweeps while a probe asks the queue manager for its counts every
/// millisecond: the sweep's duration and the longest the queue manager (which every
/// connection goes through) had to wait are what it costs delivery. Then what an operator's
/// `queue summary` and `queue list` cost over the same queues, and what the queue manager waits
/// meanwhile (their pass runs over a snapshot, off the actor). Prints one JSON line.
@main
struct SweepBench {
    static func main() async throws {
        // Only the figures on standard output. No route and no MX resolution: requeued orphans
        // go to the held set when promoted, so what is measured is the sweep, not deliveries.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .critical
            return handler
        }
        let arguments = CommandLine.arguments.dropFirst()
        let total = arguments.first.flatMap(Int.init) ?? 1_000_000
        let directory = arguments.dropFirst().first ?? NSTemporaryDirectory() + "sweep-bench-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = try SmarthostConfiguration.parse(yaml: """
            node: {id: sweep-bench}
            kafka: {brokers: ["127.0.0.1:9"]}
            redis: {address: "127.0.0.1:6379"}
            tenants: {acme: {}}
            """, fileName: "sweep-bench.yaml")
        let spool = try Spool.open(directory: directory + "/spool")
        let events = try EventPublisher(producer: nil, topic: "events", directory: directory, maximumSize: 1 << 24, keep: 1)
        let manager = QueueManager(settings: QueueManager.Settings(configuration: configuration), spool: spool, events: events,
                                   staticRoutes: StaticRoutes(configuration: configuration), mailRouter: nil)
        let content = Array("From: app@acme.test\r\nSubject: sweep bench\r\n\r\nA short body.\r\n".utf8)
        let tomorrow = MessageID.currentMilliseconds() + 86_400_000
        var filling = ContinuousClock.now
        var orphans = 0
        for start in stride(from: 0, to: total, by: 10_000) {
            let batch = (start..<min(start + 10_000, total)).map { index in
                AcceptedMessage(id: MessageID.generate(), tenant: "acme", sender: Mailbox(localPart: "app", domain: "acme.test"),
                                recipients: [Mailbox(localPart: "user\(index)", domain: "d\(index % 500).test")],
                                receivedAt: MessageID.currentMilliseconds(), client: "192.0.2.1:1", helo: "bench", trafficClass: "bulk",
                                content: content)
            }
            _ = try await spool.insert(batch.map { ($0, nil) })
            var queued: [SpooledMessage] = []
            for (offset, message) in batch.enumerated() {
                // Every 100th message is spooled and never queued: an orphan for the sweep to find.
                if (start + offset) % 100 == 99 { orphans += 1; continue }
                queued.append(SpooledMessage(id: message.id, tenant: message.tenant, sender: message.sender,
                                             pendingRecipients: message.recipients, receivedAt: message.receivedAt, job: nil,
                                             lane: .normal, trafficClass: "bulk", smtputf8: false, eightBit: false, size: content.count,
                                             attempts: 0, nextAttemptAt: tomorrow, spooledAt: message.receivedAt, position: nil))
            }
            await manager.enqueue(queued)
        }
        let fillSeconds = (ContinuousClock.now - filling) / .seconds(1)
        filling = .now

        let first = try await measure(manager)
        let second = try await measure(manager)
        let summary = try await probed(manager) { try await manager.summary(QueueFilter()) }
        let listing = try await probed(manager) { await manager.listing(QueueFilter(domain: "d7.test"), limit: 100) }
        let result: [String: Any] = [
            "messages": total, "planted_orphans": orphans, "fill_seconds": round(fillSeconds * 10) / 10,
            "sweep_ms": first.report.durationMilliseconds, "orphans_found": first.report.orphansFound,
            "us_per_message": Double(first.report.durationMilliseconds) * 1_000 / Double(total),
            "max_stall_ms": first.maxStall, "p99_stall_ms": first.p99Stall, "probes": first.probes,
            "second_sweep_ms": second.report.durationMilliseconds, "second_orphans_found": second.report.orphansFound,
            "second_max_stall_ms": second.maxStall, "rss_mib": residentMiB(),
            "summary_ms": summary.milliseconds, "summary_rows": summary.value.rows.count, "summary_max_stall_ms": summary.maxStall,
            "list_ms": listing.milliseconds, "list_matched": listing.value.matched, "list_max_stall_ms": listing.maxStall,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
        spool.close()
    }

    struct Measured {
        var report: SweepReport
        var maxStall: Double
        var p99Stall: Double
        var probes: Int
    }

    /// One sweep, with a probe measuring how long each call into the queue manager waits.
    static func measure(_ manager: QueueManager) async throws -> Measured {
        let sweep = try await probed(manager) { await manager.sweep(trigger: "bench", grace: .zero) }
        return Measured(report: sweep.value, maxStall: sweep.maxStall, p99Stall: sweep.p99Stall, probes: sweep.probes)
    }

    struct Probed<Value> {
        var value: Value
        var milliseconds: Double
        var maxStall: Double
        var p99Stall: Double
        var probes: Int
    }

    /// Runs `operation` while a probe calls into the queue manager every millisecond (what a
    /// connection asking for its next message does) and measures how long each call waits.
    static func probed<Value: Sendable>(_ manager: QueueManager, _ operation: @escaping @Sendable () async throws -> Value) async throws
        -> Probed<Value> {
        let started = ContinuousClock.now
        let work = Task { try await operation() }
        let probing = Task {
            var waits: [Double] = []
            while !Task.isCancelled {
                let asked = ContinuousClock.now
                _ = await manager.counts
                waits.append((ContinuousClock.now - asked) / .milliseconds(1))
                try? await Task.sleep(for: .milliseconds(1))
            }
            return waits
        }
        let value = try await work.value
        let milliseconds = (ContinuousClock.now - started) / .milliseconds(1)
        probing.cancel()
        let stalls = await probing.value.sorted()
        let p99 = stalls.isEmpty ? 0 : stalls[min(stalls.count - 1, stalls.count * 99 / 100)]
        return Probed(value: value, milliseconds: round(milliseconds), maxStall: round((stalls.last ?? 0) * 100) / 100,
                      p99Stall: round(p99 * 100) / 100, probes: stalls.count)
    }

    static func residentMiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kib / 1_024
    }
}
