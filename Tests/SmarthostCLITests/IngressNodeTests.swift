import Foundation
import Kafka
import QueueRecord
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `smarthost ingress` as a real process: a Tansu broker, the node, swaks as the client.
@Suite(.timeLimit(.minutes(2)))
struct IngressNodeTests {
    @Test func anIngressNodeQueuesMailInKafkaAndStopsCleanlyOnSIGTERM() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let smtpPort = try Loopback.freePort()
        let ingress = try IngressProcess.start(broker: broker, name: "ingress-test", yaml: """
            tenants:
              demo: {trusted_networks: [127.0.0.0/8]}
            ingress:
              hostname: mx.test
              listeners:
                - address: 127.0.0.1:\(smtpPort)
            """)
        let node = ingress.process
        let adminPort = ingress.adminPort
        defer { node.stop() }
        try await waitForGreeting(node, port: smtpPort, greeting: "220 mx.test ")

        let swaks = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(smtpPort)", "--from", "app@demo.test", "--to", "someone@example.com",
            "--header", "Subject: from the node test", "--header", "X-Job: node-test"])
        #expect(swaks.status == 0, "\(swaks.output)\(swaks.errors)")
        #expect(swaks.output.contains("<-  250 2.0.0 Ok: queued as "))

        let accepted = try await firstMessage(broker, topic: "smarthost.demo")
        #expect(accepted.tenant == "demo" && accepted.job == "node-test")
        #expect(accepted.recipients.map(\.description) == ["someone@example.com"])

        #expect(Loopback.httpGet(port: adminPort, path: "/ready")?.hasPrefix("HTTP/1.1 200 OK") == true)
        // The message's record, and nothing else: the ledger learns of it from the spool that takes it.
        let metrics = Loopback.httpGet(port: adminPort, path: "/metrics") ?? ""
        #expect(metrics.contains(#"smarthost_kafka_produced_total{result="acknowledged"} 1"#), "\(metrics)")
        // A stalled broker makes the node not ready (the load balancer stops sending clients).
        broker.pause()
        let notReady = try await withDeadline(.seconds(20), "readiness turning false") {
            while true {
                if let answer = Loopback.httpGet(port: adminPort, path: "/ready"), answer.hasPrefix("HTTP/1.1 503") { return answer }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        broker.resume()
        #expect(notReady.contains("Kafka unreachable"))

        // SIGTERM: the node stops accepting, flushes and exits by itself (no SIGKILL needed).
        node.signal(SIGTERM)
        let deadline = ContinuousClock.now + .seconds(15)
        while node.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!node.isRunning, "the node did not exit on SIGTERM; log:\n\(node.logTail())")
        #expect(Loopback.exchange(port: smtpPort, request: [], isComplete: { !$0.isEmpty }) == nil, "nothing listens any more")
        let log = node.logTail(lines: 200)
        #expect(log.contains("\"msg\":\"listening\""))
        #expect(log.contains("\"msg\":\"queued\""))
    }

    /// The first accepted message in `topic`.
    func firstMessage(_ broker: TansuBroker, topic: String) async throws -> AcceptedMessage {
        let record = try #require(try await readRecords(broker, topic: topic, count: 1).first, "no record in \(topic)")
        return try AcceptedMessage(key: record.key, headers: record.headers.map { ($0.name, $0.value) }, value: record.value)
    }

    @Test func anUnreadableCertificateIsNamedByItsKey() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let path = NSTemporaryDirectory() + "bad-cert-\(UUID().uuidString).yaml"
        try """
            node: {id: n}
            kafka: {brokers: ["\(broker.bootstrap)"]}
            redis: {address: "127.0.0.1:6379"}
            tenants: {demo: {}}
            ingress:
              listeners:
                - {address: "127.0.0.1:\(try Loopback.freePort())", certificate_file: /nonexistent/cert.pem, private_key_file: /nonexistent/key.pem}

            """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runCommand(SmarthostCLITests.binary, ["ingress", "--config", path])
        #expect(result.status == 2)
        #expect(result.errors.contains("\(path): ingress.listeners[0].certificate_file: cannot load /nonexistent/cert.pem"), "\(result.errors)")
    }

    @Test func aStartTLSListenerQueuesEncryptedMailMarkedAsSuch() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let certificate = try await TestCertificate.make(commonName: "mx.test")
        let smtpPort = try Loopback.freePort()
        let node = try IngressProcess.start(broker: broker, name: "ingress-tls", yaml: """
            tenants: {demo: {trusted_networks: [127.0.0.0/8]}}
            ingress:
              hostname: mx.test
              listeners:
                - {address: "127.0.0.1:\(smtpPort)", certificate_file: "\(certificate.certificatePath)", private_key_file: "\(certificate.privateKeyPath)"}
            """).process
        defer { node.stop() }
        try await waitForGreeting(node, port: smtpPort, greeting: "220 mx.test ")
        let swaks = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(smtpPort)", "--tls", "--from", "app@demo.test", "--to", "someone@example.com"])
        #expect(swaks.status == 0, "\(swaks.output)\(swaks.errors)")
        let accepted = try await firstMessage(broker, topic: "smarthost.demo")
        #expect(accepted.tls == "TLS")
        #expect(String(decoding: accepted.content.prefix(120), as: UTF8.self).contains("with ESMTPS id"))
    }

    @Test func anIngressConfigurationWithoutListenersIsRefusedByName() async throws {
        let path = NSTemporaryDirectory() + "no-listeners-\(UUID().uuidString).yaml"
        try "node: {id: n}\nkafka: {brokers: [\"127.0.0.1:9\"]}\nredis: {address: \"127.0.0.1:6379\"}\ntenants: {demo: {}}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runCommand(SmarthostCLITests.binary, ["ingress", "--config", path])
        #expect(result.status == 2)
        #expect(result.errors == "\(path): ingress.listeners: an ingress node needs at least one listener\n")
    }
}
