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
        let broker = try TansuBroker()
        defer { broker.stop() }
        let smtpPort = try Loopback.freePort()
        let adminPort = try Loopback.freePort()
        let directory = NSTemporaryDirectory() + "ingress-node-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = "\(directory)/cluster.yaml"
        try """
            node: {id: ingress-test, log_format: json, admin_listen: "127.0.0.1:\(adminPort)"}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s}
            redis: {address: "127.0.0.1:6379"}
            tenants:
              demo: {trusted_networks: [127.0.0.0/8]}
            ingress:
              hostname: mx.test
              listeners:
                - address: 127.0.0.1:\(smtpPort)
            """.write(toFile: config, atomically: true, encoding: .utf8)

        let node = try ManagedProcess(name: "smarthost ingress", executable: SmarthostCLITests.binary,
                                      arguments: ["ingress", "--config", config], logPath: "\(directory)/ingress.log")
        defer { node.stop() }
        try waitForGreeting(node, port: smtpPort, greeting: "220 mx.test ")

        let swaks = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(smtpPort)", "--from", "app@demo.test", "--to", "someone@example.com",
            "--header", "Subject: from the node test", "--header", "X-Job: node-test"])
        #expect(swaks.status == 0, "\(swaks.output)\(swaks.errors)")
        #expect(swaks.output.contains("<-  250 2.0.0 Ok: queued as "))

        var settings = KafkaConsumerConfiguration(bootstrapServers: [broker.bootstrap], groupID: "node-test", topics: ["smarthost.demo"])
        settings.sessionTimeout = .seconds(6)
        let consumer = try KafkaConsumer(configuration: settings)
        let records = try await withDeadline(.seconds(60), "the record in smarthost.demo") {
            var records: [ConsumedRecord] = []
            while records.isEmpty { records = await consumer.nextBatch(max: 10) }
            return records
        }
        await consumer.close()
        let accepted = try AcceptedMessage(key: records[0].key, headers: records[0].headers.map { ($0.name, $0.value) }, value: records[0].value)
        #expect(accepted.tenant == "demo" && accepted.job == "node-test")
        #expect(accepted.recipients.map(\.description) == ["someone@example.com"])

        #expect(Loopback.httpGet(port: adminPort, path: "/ready")?.hasPrefix("HTTP/1.1 200 OK") == true)
        #expect(Loopback.httpGet(port: adminPort, path: "/metrics")?.contains(#"smarthost_kafka_produced_total{result="acknowledged"} 1"#) == true)
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

    @Test func anIngressConfigurationWithoutListenersIsRefusedByName() async throws {
        let path = NSTemporaryDirectory() + "no-listeners-\(UUID().uuidString).yaml"
        try "node: {id: n}\nkafka: {brokers: [\"127.0.0.1:9\"]}\nredis: {address: \"127.0.0.1:6379\"}\ntenants: {demo: {}}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runCommand(SmarthostCLITests.binary, ["ingress", "--config", path])
        #expect(result.status == 2)
        #expect(result.errors == "\(path): ingress.listeners: an ingress node needs at least one listener\n")
    }
}
