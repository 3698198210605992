import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// smtp-source → `smarthost ingress` → Kafka (Tansu) → `smarthost delivery` ×2 → smtp-sink,
/// every part a real process; the sink keeps each message as one file.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct EndToEndDeliveryTests {
    static let tenantYAML = """
        tenants:
          demo: {trusted_networks: [127.0.0.0/8], traffic_class: transactional}
        """

    /// An smtp-sink that writes every message to its own file under `directory`.
    static func startSink(directory: String, port: Int) async throws -> ManagedProcess {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o777)
        let user = getuid() == 0 ? ["-u", "nobody"] : []
        let sink = try ManagedProcess(name: "smtp-sink", executable: try findExecutable("smtp-sink"),
                                      arguments: user + ["-d", "\(directory)/%H%M%S.", "127.0.0.1:\(port)", "1000"],
                                      logPath: "\(directory).log")
        try await waitForGreeting(sink, port: port, greeting: "220 ")
        return sink
    }

    /// The ingress ids of the messages the sink holds (one per message, duplicates included),
    /// and each message as smtp-sink saw it, from its From: line on with CRLF line ends.
    static func sinkContents(_ directory: String) throws -> [(id: String, message: [UInt8])] {
        try FileManager.default.contentsOfDirectory(atPath: directory).compactMap { name in
            let text = try String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8)
            guard let idRange = text.range(of: #"with ESMTP id [0-9A-Z]{26}"#, options: .regularExpression),
                  let from = text.range(of: "\nFrom: ") else { return nil }
            var body = String(text[text.index(after: from.lowerBound)...])
            if body.hasSuffix("\n\n") { body.removeLast() }
            return (String(text[idRange].suffix(26)), Array(body.replacingOccurrences(of: "\n", with: "\r\n").utf8))
        }
    }

    static func fileCount(_ directory: String) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: directory).count) ?? 0
    }

    @Test func tenThousandMessagesArriveAtTheSinkExactlyOnceByteForByte() async throws {
        let messages = 10_000
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker, tenants: ["demo"])
        let sinkDirectory = NSTemporaryDirectory() + "e2e-sink-\(UUID().uuidString.prefix(8))"
        let sinkPort = try Loopback.freePort()
        let sink = try await Self.startSink(directory: sinkDirectory, port: sinkPort)
        defer { sink.stop() }
        let ingressPort = try Loopback.freePort()
        let ingress = try IngressProcess.start(broker: broker, name: "e2e-ingress", yaml: Self.tenantYAML + """

            ingress:
              hostname: mx.test
              listeners: [{address: "127.0.0.1:\(ingressPort)"}]
            """)
        defer { ingress.stop() }
        let deliveries = try (1...2).map { index in
            try DeliveryProcess.start(broker: broker, name: "e2e-delivery-\(index)", yaml: Self.tenantYAML + """

                delivery: {default_next_hop: "127.0.0.1:\(sinkPort)", command_timeout: 30s}
                """)
        }
        defer { for node in deliveries { node.stop() } }
        try await waitForGreeting(ingress.process, port: ingressPort, greeting: "220 mx.test ")

        let reference = try await LoadBalancedIngressTests().referenceMessage(subject: "end to end")
        let source = try await runCommand(try findExecutable("smtp-source"), [
            "-m", "\(messages)", "-s", "20", "-l", "2048", "-f", "app@demo.test", "-t", "someone@example.com",
            "-S", "end to end", "127.0.0.1:\(ingressPort)"])
        #expect(source.status == 0 && source.errors.isEmpty, "smtp-source: \(source.output)\(source.errors)")

        let arrived = try await eventually(.seconds(180), every: .milliseconds(500)) { Self.fileCount(sinkDirectory) >= messages }
        #expect(arrived, "\(Self.fileCount(sinkDirectory)) of \(messages) at the sink; delivery log:\n\(deliveries[0].process.logTail())")
        // Watching on: a duplicate would arrive as an extra file.
        try await Task.sleep(for: .seconds(5))
        let contents = try Self.sinkContents(sinkDirectory)
        #expect(Self.fileCount(sinkDirectory) == messages)
        #expect(contents.count == messages)
        #expect(Set(contents.map(\.id)).count == messages, "each message exactly once")
        var mismatches = 0
        for (_, message) in contents where LoadBalancedIngressTests.normalized(message).message != reference {
            if mismatches == 0 {
                Issue.record("first difference:\n\(String(decoding: message, as: UTF8.self).debugDescription)\nexpected:\n\(String(decoding: reference, as: UTF8.self).debugDescription)")
            }
            mismatches += 1
        }
        #expect(mismatches == 0, "every message byte for byte as sent, apart from the trace headers")
        let events = try deliveries.flatMap { try $0.events() }
        #expect(events.filter { $0.type == .delivery }.count == messages)
        print("end to end: \(messages) messages, each at the sink once; deliveries by node: "
              + deliveries.map { node in "\(node.process.name) \((try? node.events().count) ?? 0)" }.joined(separator: ", "))
    }

    @Test func aDeliveryNodeKilledMidRunAndRestartedOnItsSpoolLosesNothing() async throws {
        let messages = 5_000
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker, tenants: ["demo"])
        let sinkDirectory = NSTemporaryDirectory() + "kill-sink-\(UUID().uuidString.prefix(8))"
        let sinkPort = try Loopback.freePort()
        let sink = try await Self.startSink(directory: sinkDirectory, port: sinkPort)
        defer { sink.stop() }
        var nodes = try (1...2).map { index in
            try DeliveryProcess.start(broker: broker, name: "kill-delivery-\(index)", yaml: Self.tenantYAML + """

                delivery: {default_next_hop: "127.0.0.1:\(sinkPort)", command_timeout: 30s, max_connections_per_site: 8}
                """)
        }
        defer { for node in nodes { node.stop() } }
        let batch = (0..<messages).map { testMessage(tenant: "demo", to: ["user\($0)@example.com"], trafficClass: "transactional") }
        try await enqueue(batch, broker: broker)

        // The kill lands in the middle of the run: a quarter delivered.
        #expect(try await eventually(.seconds(60), every: .milliseconds(20)) { Self.fileCount(sinkDirectory) >= messages / 4 })
        nodes[0].process.crash()
        let atKill = Self.fileCount(sinkDirectory)
        nodes[0] = try nodes[0].restart()

        let arrived = try await eventually(.seconds(180), every: .milliseconds(500)) {
            Set(try Self.sinkIDs(sinkDirectory)).count >= messages
        }
        try await Task.sleep(for: .seconds(3))
        let ids = try Self.sinkIDs(sinkDirectory)
        let distinct = Set(ids)
        #expect(arrived && distinct.count == messages, "\(distinct.count) of \(messages) delivered; log:\n\(nodes[0].process.logTail())")
        #expect(distinct == Set(batch.map(\.id.text)))
        print("SIGKILL mid-run: killed at \(atKill) delivered; \(messages) of \(messages) delivered after the restart, \(ids.count - distinct.count) duplicates")
    }

    /// The message ids (from the test messages' Message-Id) of the messages at the sink.
    static func sinkIDs(_ directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).compactMap { name in
            let text = try String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8)
            return text.range(of: #"Message-Id: <[0-9A-Z]{26}@"#, options: .regularExpression).map { String(text[$0].dropFirst(13).prefix(26)) }
        }
    }
}
