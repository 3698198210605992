import Events
import Foundation
import QueueRecord
import Testing
import TestSupport

/// A backlog of bulk mail to one destination, then a few transactional messages: the
/// transactional ones overtake the backlog (they wait behind at most what the open connections
/// are sending), on a real delivery node feeding a real SMTP destination.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct PriorityLaneTests {
    static let bulk = 50_000
    static let transactional = 10

    @Test func transactionalMailOvertakesABulkBacklog() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let destination = try await ScriptedSMTPServer.start()
        defer { destination.stop() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-lanes", yaml: """
            tenants:
              acme: {trusted_networks: [127.0.0.0/8]}
            routes:
              - {domain: inbox.test, next_hop: "127.0.0.1:\(destination.port)"}
            delivery: {command_timeout: 30s, max_connections_per_site: 4}
            """)
        defer { node.stop() }

        for start in stride(from: 0, to: Self.bulk, by: 10_000) {
            let chunk = (start..<min(start + 10_000, Self.bulk)).map {
                testMessage(to: ["bulk\($0)@inbox.test"], trafficClass: "bulk", subject: "newsletter")
            }
            try await enqueue(chunk, broker: broker)
        }
        func delivered() -> Int { Int(node.metric("smarthost_delivery_recipients_total", labels: #"outcome="delivered""#) ?? 0) }
        // The whole backlog is queued on the node and being sent.
        let backlogged = try await eventually(.seconds(120), every: .milliseconds(500)) {
            let queued = Int(node.metric("smarthost_queue_entries") ?? 0)
            return queued + delivered() >= Self.bulk && delivered() >= 1_000
        }
        #expect(backlogged, "queued \(node.metric("smarthost_queue_entries") ?? -1), delivered \(delivered()); log:\n\(node.process.logTail())")

        let resets = (0..<Self.transactional).map {
            testMessage(to: ["reset\($0)@inbox.test"], trafficClass: "transactional", lane: .high, subject: "password reset")
        }
        let backlogAtSend = Self.bulk - delivered()
        try await enqueue(resets, broker: broker)
        let ids = Set(resets.map(\.id.text))
        // Raw lines, not decoded: the log holds tens of thousands of events by then.
        func transactionalDeliveries() -> [Substring] {
            let text = (try? String(contentsOfFile: "\(node.spoolDirectory)/events.jsonl", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").filter { line in
                line.contains(#""type":"Delivery""#) && ids.contains { line.contains($0) }
            }
        }
        let arrived = try await eventually(.seconds(120), every: .milliseconds(250)) {
            transactionalDeliveries().count == Self.transactional
        }
        #expect(arrived, "all transactional messages delivered; log:\n\(node.process.logTail())")
        let backlogAtArrival = Self.bulk - delivered()

        #expect(backlogAtArrival > 0, "the bulk backlog had not drained when the last transactional message was delivered")
        let latencies = try transactionalDeliveries().map { try MessageEvent(json: Array($0.utf8)) }
            .map { Int($0.time - ($0.receivedAt ?? $0.time)) }.sorted()

        // The backlog drains afterwards, every message once.
        let drained = try await eventually(.seconds(300), every: .seconds(1)) { delivered() == Self.bulk + Self.transactional }
        #expect(drained, "delivered \(delivered())")

        // At the destination, in the order of arrival: the transactional messages came before
        // most of the bulk.
        let received = try destination.messages()
        #expect(received.count == Self.bulk + Self.transactional, "every message received once")
        let positions = received.enumerated().compactMap { index, record in
            record.recipients?.first?.hasPrefix("reset") == true ? index : nil
        }
        #expect(positions.count == Self.transactional, "each transactional message received once")
        let bulkAfter = received.count - (positions.max() ?? received.count) - 1
        #expect(bulkAfter > 0, "bulk messages arrived after the last transactional one")
        print("""
            priority lanes: \(Self.bulk) bulk messages queued to one destination (4 connections); \(Self.transactional) \
            transactional queued while \(backlogAtSend) bulk were waiting. Transactional latency, Kafka record to 250 at \
            the destination: min \(latencies.first ?? -1) ms, median \(latencies[latencies.count / 2]) ms, max \(latencies.last ?? -1) ms. \
            The destination received \(bulkAfter) bulk messages after the last transactional one (positions \(positions.min() ?? -1)…\
            \(positions.max() ?? -1) of \(received.count)).
            """)
    }
}
