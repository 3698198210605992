import Foundation
import Kafka
import QueueRecord
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Failures around a real `smarthost ingress` process: a stalled broker and a node killed in
/// the middle of a message. Invariant 1: a 250 means Kafka has the message; nothing else does.
@Suite(.timeLimit(.minutes(3)))
struct IngressFailureTests {
    func demoNode(_ broker: TansuBroker, port: Int, name: String) throws -> IngressProcess {
        try IngressProcess.start(broker: broker, name: name, yaml: """
            tenants:
              demo: {trusted_networks: [127.0.0.0/8]}
            ingress:
              hostname: mx.test
              listeners:
                - {address: "127.0.0.1:\(port)"}
            """)
    }

    /// The queue id in a swaks transcript's 250 reply to the message, if there is one.
    static func queuedID(_ transcript: String) -> String? {
        guard let range = transcript.range(of: "250 2.0.0 Ok: queued as ") else { return nil }
        return String(transcript[range.upperBound...].prefix { $0.isLetter || $0.isNumber })
    }

    @Test func aStalledBrokerGets451WithinTheTimeoutAndEvery250IsInKafkaAfterwards() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let port = try Loopback.freePort()
        let node = try demoNode(broker, port: port, name: "stall-ingress")  // kafka.delivery_timeout: 5s
        defer { node.stop() }
        try await waitForGreeting(node.process, port: port, greeting: "220 mx.test ")
        let swaks = try findExecutable("swaks")
        // Three clients sending one message after another; the broker stalls in the middle.
        let transcripts = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<3 {
                group.addTask {
                    var transcripts: [String] = []
                    for message in 0..<8 {
                        // The client waits longer than the ingress's Kafka timeout (5 s + 2 s guard).
                        let result = try await runCommand(swaks, ["--server", "127.0.0.1:\(port)", "--timeout", "30",
                                                                  "--from", "app@demo.test", "--to", "c\(client)m\(message)@example.com"])
                        transcripts.append(result.output)
                    }
                    return transcripts
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(1))
                broker.pause()
                try await Task.sleep(for: .seconds(9))
                broker.resume()
                return []
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(transcripts.count == 24)
        let refused = transcripts.filter { $0.contains("451 4.3.0 Queue temporarily unavailable, try again later") }
        let acknowledged = transcripts.compactMap(Self.queuedID)
        #expect(!refused.isEmpty, "a client sending while the broker was stopped got 451")
        #expect(refused.count + acknowledged.count == transcripts.count, "every message got 250 or 451, none a timeout:\n\(transcripts.filter { Self.queuedID($0) == nil && !$0.contains("451 4.3.0") }.first ?? "")")

        let records = try await readRecords(broker, topic: "smarthost.demo", count: acknowledged.count, timeout: .seconds(60),
                                            thenWatchFor: .seconds(3))
        let inKafka = Set(try records.map { try AcceptedMessage(key: $0.key, headers: $0.headers.map { ($0.name, $0.value) }, value: $0.value).id.text })
        #expect(Set(acknowledged).isSubset(of: inKafka), "acknowledged but not in Kafka: \(Set(acknowledged).subtracting(inKafka))")
    }

    @Test func aNodeKilledInTheMiddleOfDataAcknowledgesNothingAndKafkaHasNothing() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let port = try Loopback.freePort()
        let node = try demoNode(broker, port: port, name: "killed-ingress")
        defer { node.stop() }
        try await waitForGreeting(node.process, port: port, greeting: "220 mx.test ")
        let before = try await runCommand(try findExecutable("swaks"), ["--server", "127.0.0.1:\(port)", "--from", "app@demo.test", "--to", "a@example.com"])
        #expect(Self.queuedID(before.output) != nil, "\(before.output)")

        // A client that stops half-way through its message and then reads whatever comes.
        let client = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", \(port)))
            s.sendall(b"EHLO c\\r\\nMAIL FROM:<app@demo.test>\\r\\nRCPT TO:<b@example.com>\\r\\nDATA\\r\\nSubject: half\\r\\n\\r\\nKILLED-MID-DATA marker line\\r\\n")
            s.settimeout(30)
            received = b""
            while b"354 " not in received:
                received += s.recv(4096)
            print(received.decode(errors="replace"), flush=True)
            while True:
                chunk = s.recv(4096)
                if not chunk: break
                print(chunk.decode(errors="replace"), flush=True)
            """
        let directory = NSTemporaryDirectory() + "mid-data-\(UUID().uuidString)"
        let python = try ManagedProcess(name: "half client", executable: try findExecutable("python3"), arguments: ["-c", client],
                                        logPath: "\(directory).log")
        defer { python.stop() }
        try await withDeadline(.seconds(20), "the client's 354") {
            while !python.logTail().contains("354 ") { try await Task.sleep(for: .milliseconds(50)) }
        }
        node.process.signal(SIGKILL)
        try await withDeadline(.seconds(20), "the client seeing the connection close") {
            while python.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        }
        let seen = python.logTail(lines: 100)
        #expect(seen.contains("354 End data"), "\(seen)")
        #expect(!seen.contains("Ok: queued"), "no acknowledgement for the unfinished message")

        let records = try await readRecords(broker, topic: "smarthost.demo", count: 1, timeout: .seconds(60), thenWatchFor: .seconds(3))
        #expect(records.count == 1, "only the message sent before")
        #expect(!records.contains { String(decoding: $0.value, as: UTF8.self).contains("KILLED-MID-DATA") })
    }

    @Test func onSIGTERMASessionInTheMiddleOfItsMessageFinishesAndIsQueued() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let port = try Loopback.freePort()
        let node = try demoNode(broker, port: port, name: "draining-ingress")
        defer { node.stop() }
        try await waitForGreeting(node.process, port: port, greeting: "220 mx.test ")
        // Half a message, a pause (the node gets SIGTERM meanwhile), then the rest.
        let client = """
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(port)))
            s.sendall(b"EHLO c\\r\\nMAIL FROM:<app@demo.test>\\r\\nRCPT TO:<b@example.com>\\r\\nDATA\\r\\nSubject: draining\\r\\n\\r\\nfirst half\\r\\n")
            s.settimeout(30)
            received = b""
            while b"354 " not in received:
                received += s.recv(4096)
            print("354 seen", flush=True)
            time.sleep(2)
            s.sendall(b"second half\\r\\n.\\r\\nQUIT\\r\\n")
            while b"221 " not in received:
                chunk = s.recv(4096)
                if not chunk: break
                received += chunk
            print(received.decode(errors="replace"), flush=True)
            """
        let python = try ManagedProcess(name: "slow client", executable: try findExecutable("python3"), arguments: ["-c", client],
                                        logPath: NSTemporaryDirectory() + "draining-\(UUID().uuidString).log")
        defer { python.stop() }
        try await withDeadline(.seconds(20), "the client's 354") {
            while !python.logTail().contains("354 seen") { try await Task.sleep(for: .milliseconds(50)) }
        }
        node.process.signal(SIGTERM)
        try await withDeadline(.seconds(30), "the client finishing") {
            while python.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        }
        try await withDeadline(.seconds(30), "the node exiting after its last session") {
            while node.process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        }
        let seen = python.logTail(lines: 100)
        #expect(seen.contains("250 2.0.0 Ok: queued as "), "the session in progress was let finish: \(seen)")
        #expect(Loopback.exchange(port: port, request: [], isComplete: { !$0.isEmpty }) == nil, "no longer accepting")
        let records = try await readRecords(broker, topic: "smarthost.demo", count: 1, timeout: .seconds(60))
        #expect(records.contains { String(decoding: $0.value, as: UTF8.self).contains("first half\r\nsecond half\r\n") })
    }
}
