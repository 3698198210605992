import Foundation
import Kafka
import QueueRecord
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Two `smarthost ingress` processes behind a real HAProxy (PROXY v2), `smtp-source` as the
/// client: what the client sent is in Kafka exactly once, byte for byte.
@Suite(.timeLimit(.minutes(5)))
struct LoadBalancedIngressTests {
    static let messages = 10_000

    @Test func tenThousandMessagesThroughHAProxyAreEachInKafkaExactlyOnceByteForByte() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let ports = [try Loopback.freePort(), try Loopback.freePort()]
        let nodes = try ports.enumerated().map { index, port in
            try IngressProcess.start(broker: broker, name: "lb-ingress-\(index)", yaml: """
                tenants:
                  demo: {trusted_networks: [127.0.0.0/8]}
                ingress:
                  hostname: mx.test
                  listeners:
                    - {address: "127.0.0.1:\(port)", proxy_protocol: true}
                """)
        }
        defer { for node in nodes { node.stop() } }
        let haproxy = try HAProxy.start(backends: ports)
        defer { haproxy.stop() }
        try await waitForGreeting(haproxy.process, port: haproxy.port, greeting: "220 mx.test ")

        let reference = try await referenceMessage()
        let source = try await runCommand(try findExecutable("smtp-source"), [
            "-m", "\(Self.messages)", "-s", "20", "-l", "2048", "-f", "app@demo.test", "-t", "someone@example.com",
            "-S", "load balanced", "127.0.0.1:\(haproxy.port)"])
        #expect(source.status == 0 && source.errors.isEmpty, "smtp-source: \(source.output)\(source.errors)")

        // Reading on for a while after the last one: a duplicate would show as an extra record.
        let records = try await readRecords(broker, topic: "smarthost.demo", count: Self.messages, timeout: .seconds(120),
                                            thenWatchFor: .seconds(5))
        #expect(records.count == Self.messages)
        var ids = Set<String>()
        var messageIDs = Set<String>()
        var mismatches = 0
        for record in records {
            let accepted = try AcceptedMessage(key: record.key, headers: record.headers.map { ($0.name, $0.value) }, value: record.value)
            ids.insert(accepted.id.text)
            let (normalized, messageID) = Self.normalized(Self.withoutReceivedLine(accepted.content))
            messageIDs.insert(messageID)
            if normalized != reference {
                if mismatches == 0 {
                    Issue.record("first difference:\n\(String(decoding: normalized, as: UTF8.self).debugDescription)\nexpected:\n\(String(decoding: reference, as: UTF8.self).debugDescription)")
                }
                mismatches += 1
            }
        }
        #expect(ids.count == Self.messages, "each record is a distinct accepted message")
        #expect(messageIDs.count == Self.messages, "each message smtp-source sent is there once")
        #expect(mismatches == 0, "every message is byte for byte what smtp-source sent")
        for node in nodes {
            let metrics = Loopback.httpGet(port: node.adminPort, path: "/metrics") ?? ""
            #expect(metrics.contains(#"smarthost_kafka_produced_total{result="acknowledged"}"#), "both nodes took traffic")
        }
    }

    /// What smtp-source sends for one message with the same options, as a bare smtp-sink saw
    /// it (smtp-sink's own trace lines removed), Date and Message-Id normalised.
    func referenceMessage(subject: String = "load balanced") async throws -> [UInt8] {
        let directory = NSTemporaryDirectory() + "sink-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o777)
        let port = try Loopback.freePort()
        let user = getuid() == 0 ? ["-u", "nobody"] : []
        let sink = try ManagedProcess(name: "smtp-sink", executable: try findExecutable("smtp-sink"),
                                      arguments: user + ["-d", "\(directory)/%M", "127.0.0.1:\(port)", "10"], logPath: "\(directory).log")
        defer { sink.stop() }
        try await waitForGreeting(sink, port: port, greeting: "220 ")
        let source = try await runCommand(try findExecutable("smtp-source"), [
            "-m", "1", "-s", "1", "-l", "2048", "-f", "app@demo.test", "-t", "someone@example.com", "-S", subject, "127.0.0.1:\(port)"])
        #expect(source.status == 0, "\(source.errors)")
        let file = try await withDeadline(.seconds(10), "smtp-sink's dump") {
            while true {
                if let name = try FileManager.default.contentsOfDirectory(atPath: directory).first {
                    return "\(directory)/\(name)"
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // smtp-sink writes LF line ends; the message on the wire had CRLF.
        var dumped = try String(contentsOfFile: file, encoding: .utf8)
        if dumped.hasSuffix("\n\n") { dumped.removeLast() }  // smtp-sink ends each dump with an empty line
        let fromLine = try #require(dumped.range(of: "From: "))
        let message = Array(String(dumped[fromLine.lowerBound...]).replacingOccurrences(of: "\n", with: "\r\n").utf8)
        return Self.normalized(message).message
    }

    static func withoutReceivedLine(_ content: [UInt8]) -> ArraySlice<UInt8> {
        // The Received: field and its continuation lines (starting with a tab).
        var index = 0
        repeat {
            index = content[index...].firstIndex(of: 10).map { $0 + 1 } ?? content.count
        } while index < content.count && content[index] == 9
        return content[index...]
    }

    /// The message with its Date: and Message-Id: values replaced, and the Message-Id found.
    static func normalized(_ message: some Collection<UInt8>) -> (message: [UInt8], messageID: String) {
        var messageID = ""
        let lines = String(decoding: message, as: UTF8.self).components(separatedBy: "\r\n").map { line in
            if line.hasPrefix("Date: ") { return "Date: -" }
            if line.hasPrefix("Message-Id: ") { messageID = line; return "Message-Id: -" }
            return line
        }
        return (Array(lines.joined(separator: "\r\n").utf8), messageID)
    }
}
