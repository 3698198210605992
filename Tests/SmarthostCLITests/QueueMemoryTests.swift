import Foundation
import Testing
import TestSupport

/// A destination that refuses connections while 200,000 messages queue up on one delivery
/// node: what each queued message costs in resident memory, and that all of them go out once
/// the destination is back, without a restart.
@Suite(.serialized, .timeLimit(.minutes(12)))
struct QueueMemoryTests {
    static let messages = 200_000

    @Test func twoHundredThousandQueuedMessagesCostLittleMemoryAndAllLeaveWhenTheDestinationRecovers() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let destinationPort = try Loopback.freePort()
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-memory", yaml: """
            traffic_classes:
              patient: {first_retry: 20s, retry_multiplier: 1, max_retry_interval: 20s, expiry: 1h}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], traffic_class: patient}
            routes:
              - {domain: down.test, next_hop: "127.0.0.1:\(destinationPort)"}
            delivery: {connect_timeout: 1s, command_timeout: 30s}
            """)
        defer { node.stop() }
        // The node is up, in its group, with nothing queued.
        #expect(try await eventually(.seconds(30)) { node.metric("smarthost_kafka_consumer_buffered") != nil })
        try await Task.sleep(for: .seconds(5))
        let baseline = try #require(node.residentBytes())

        for start in stride(from: 0, to: Self.messages, by: 20_000) {
            let chunk = (start..<min(start + 20_000, Self.messages)).map { testMessage(to: ["user\($0)@down.test"], trafficClass: "patient") }
            try await enqueue(chunk, broker: broker)
        }
        // Queued: a few thousand tried and deferred, the rest waiting while the next hop backs off.
        let queued = try await eventually(.seconds(300), every: .seconds(1)) {
            node.metric("smarthost_queue_entries") == Double(Self.messages)
                && node.metric("smarthost_queue_entries", labels: #"state="in-flight""#) == 0
        }
        #expect(queued, "queued: \(node.metric("smarthost_queue_entries") ?? -1); log:\n\(node.process.logTail())")
        let loaded = try #require(node.residentBytes())
        let perMessage = Double(loaded - baseline) / Double(Self.messages)
        let deferred = Int(node.metric("smarthost_delivery_recipients_total", labels: #"outcome="deferred""#) ?? -1)
        print("200k queued (\(deferred) attempted and deferred while the destination refused): RSS \(baseline / 1_048_576) MiB empty, \(loaded / 1_048_576) MiB with \(Self.messages) queued: \(Int(perMessage)) bytes per queued message")
        #expect(perMessage <= 1_024, "at most 1 KiB of RSS per queued message")

        // The destination comes back: everything leaves on its next retry, no restart.
        let sink = try ManagedProcess(name: "smtp-sink", executable: try findExecutable("smtp-sink"),
                                      arguments: (getuid() == 0 ? ["-u", "nobody"] : []) + ["127.0.0.1:\(destinationPort)", "1000"],
                                      logPath: NSTemporaryDirectory() + "memory-sink-\(UUID().uuidString.prefix(8)).log")
        defer { sink.stop() }
        let drained = try await eventually(.seconds(400), every: .seconds(1)) {
            node.metric("smarthost_delivery_recipients_total", labels: #"outcome="delivered""#) == Double(Self.messages)
        }
        #expect(drained, "delivered \(node.metric("smarthost_delivery_recipients_total", labels: #"outcome="delivered""#) ?? -1)")
        #expect(try await eventually(.seconds(30)) { node.metric("smarthost_queue_entries") == 0 })
        let left = try await runCommand("/usr/bin/sqlite3", ["\(node.spoolDirectory)/spool.sqlite", "SELECT count(*) FROM message"])
        #expect(left.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "spool empty: \(left.output)\(left.errors)")
        print("200k queued: all delivered after the destination recovered; RSS then \((node.residentBytes() ?? 0) / 1_048_576) MiB")
    }
}
