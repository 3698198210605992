import Foundation
import NodeHTTP
import Testing
import TestSupport

/// Every node's `/metrics` on a real run (Tansu, Redis, an ingress node, a delivery node, the
/// reconciler, a scripted destination): promtool accepts each exposition, and the Kafka, Redis
/// and spool metrics of docs/metrics.md are there with values that fit the traffic sent.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct MetricsTests {
    /// A Prometheus text exposition, parsed into samples.
    struct Exposition {
        let text: String
        let samples: [(name: String, labels: String, value: Double)]

        init(_ text: String) {
            self.text = text
            samples = text.split(separator: "\n").compactMap { line in
                guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { return nil }
                let series = line[..<space]
                let name = series.prefix { $0 != "{" }
                return (String(name), String(series.dropFirst(name.count)), value)
            }
        }

        /// The sum of the samples of `name` whose labels contain `labels`; nil when there are none.
        func value(_ name: String, _ labels: String = "") -> Double? {
            let values = samples.filter { $0.name == name && (labels.isEmpty || $0.labels.contains(labels)) }.map(\.value)
            return values.isEmpty ? nil : values.reduce(0, +)
        }
    }

    /// The body of a node's `/metrics`, nil while it does not answer.
    static func scrape(_ port: Int) -> Exposition? {
        guard let response = Loopback.httpGet(port: port, path: "/metrics"),
              let split = response.range(of: "\r\n\r\n"), response.hasPrefix("HTTP/1.1 200") else { return nil }
        return Exposition(String(response[split.upperBound...]))
    }

    /// Polls a node's `/metrics` until `condition` holds of it (or `limit` passes) and returns the last scrape.
    static func scrape(_ port: Int, within limit: Duration, until condition: (Exposition) -> Bool) async throws -> Exposition? {
        var last: Exposition?
        _ = try await eventually(limit, every: .milliseconds(500)) {
            last = scrape(port)
            return last.map(condition) ?? false
        }
        return last
    }

    /// Tenant `acme` (from loopback, a message-rate quota in Redis so that the ingress node uses
    /// Redis too), mail for inbox.test to the destination on `port`, retried every second.
    static func clusterYAML(destination port: Int) -> String {
        """
        traffic_classes:
          fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 1h}
        tenants:
          acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast, message_rate: 10000/h}
        routes:
          - {domain: inbox.test, next_hop: "127.0.0.1:\(port)"}
        delivery: {command_timeout: 30s}
        """
    }

    /// A delivery node whose bootstrap list also names a broker that refuses connections, so
    /// that librdkafka reports errors (`smarthost_kafka_errors_total`) on an otherwise healthy run
    /// (connecting to every broker at once: by default librdkafka may never try that one).
    static func startDelivery(broker: TansuBroker, redis: RedisServer, yaml: String) throws -> DeliveryProcess {
        let directory = NSTemporaryDirectory() + "metrics-delivery-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (spool, config, adminPort) = ("\(directory)/spool", "\(directory)/cluster.yaml", try Loopback.freePort())
        try """
            node: {id: metrics-delivery, log_format: json, admin_listen: "127.0.0.1:\(adminPort)", spool_dir: "\(spool)", admin_token: \(DeliveryProcess.adminToken)}
            kafka: {brokers: ["\(broker.bootstrap)", "127.0.0.1:\(try Loopback.freePort())"], delivery_timeout: 5s, session_timeout: 6s, metadata_refresh: 1s,
                    client_options: {enable.sparse.connections: "false"}}
            redis: {address: "\(redis.address)"}
            reconciliation: {sweep_every: 2s, orphan_grace: 1s}
            \(yaml)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = try ManagedProcess(name: "metrics-delivery", executable: SmarthostCLITests.binary,
                                         arguments: ["delivery", "--config", config], logPath: "\(directory)/delivery.log")
        return DeliveryProcess(process: process, spoolDirectory: spool, config: config, adminPort: adminPort)
    }

    static func startReconciler(broker: TansuBroker, redis: RedisServer, yaml: String, adminPort: Int) throws -> ClusterLedgerTests.ReconcilerProcess {
        let directory = NSTemporaryDirectory() + "metrics-reconciler-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = "\(directory)/cluster.yaml"
        try """
            node: {id: metrics-reconciler, log_format: json, admin_listen: "127.0.0.1:\(adminPort)", admin_token: \(DeliveryProcess.adminToken)}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s, session_timeout: 6s, metadata_refresh: 1s}
            redis: {address: "\(redis.address)"}
            reconciliation: {ledger_dir: "\(directory)/ledger", unaccounted_after: 1m, ledger_every: 2s}
            \(yaml)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        return try ClusterLedgerTests.ReconcilerProcess.start(config: config)
    }

    /// Six messages through ingress, Kafka and a delivery node: four delivered, two deferred by a
    /// 451 at RCPT (and retried every second). Each node's `/metrics` passes promtool and shows
    /// Kafka latency (produce ack histogram), Kafka errors (librdkafka's, from a bootstrap
    /// broker that refuses connections), Redis latency and error series, spool bytes and
    /// messages, and consumer lag.
    @Test func everyNodeExportsPromtoolCleanKafkaRedisAndSpoolMetrics() async throws {
        _ = try findExecutable("promtool")  // fails at once, naming scripts/setup, where it is missing
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let destination = try await ScriptedSMTPServer.start(
            script: #"{"rules": [{"when": "rcpt", "address": "later@inbox.test", "reply": "451 4.3.0 try again later"}]}"#)
        defer { destination.stop() }
        let yaml = Self.clusterYAML(destination: destination.port)

        let smtpPort = try Loopback.freePort()
        let ingress = try IngressProcess.start(broker: broker, name: "metrics-ingress", yaml: yaml + """

            ingress:
              hostname: mx.test
              listeners: [{address: "127.0.0.1:\(smtpPort)"}]
            """, redisPort: redis.port)
        defer { ingress.stop() }
        let delivery = try Self.startDelivery(broker: broker, redis: redis, yaml: yaml)
        defer { delivery.stop() }
        let reconcilerPort = try Loopback.freePort()
        let reconciler = try Self.startReconciler(broker: broker, redis: redis, yaml: yaml, adminPort: reconcilerPort)
        defer { reconciler.process.stop() }
        try await waitForGreeting(ingress.process, port: smtpPort, greeting: "220 mx.test ")

        let (delivered, deferred) = (4, 2)
        for (count, recipient) in [(delivered, "ok@inbox.test"), (deferred, "later@inbox.test")] {
            let sent = try await runCommand(try findExecutable("smtp-source"), [
                "-m", "\(count)", "-s", "1", "-l", "512", "-f", "app@acme.test", "-t", recipient, "127.0.0.1:\(smtpPort)"])
            try #require(sent.status == 0 && sent.errors.isEmpty, "smtp-source: \(sent.output)\(sent.errors)")
        }
        let messages = delivered + deferred

        let arrived = try await eventually(.seconds(60), every: .milliseconds(500)) { try destination.messages().count >= delivered }
        let arrivedCount = try destination.messages().count
        #expect(arrived, "\(arrivedCount) of \(delivered) delivered; log:\n\(delivery.process.logTail())")
        let deliveryScrape = try await Self.scrape(delivery.adminPort, within: .seconds(60)) { metrics in
            (metrics.value("smarthost_delivery_recipients_total", #"outcome="deferred""#) ?? 0) >= Double(deferred)
                && (metrics.value("smarthost_spool_messages") ?? 0) >= Double(deferred)
                && metrics.value("smarthost_kafka_consumer_lag") == 0
                && (metrics.value("smarthost_kafka_errors_total", #"role="consumer""#) ?? 0) >= 1
                && metrics.value("smarthost_queue_depth", #"domain="inbox.test""#) == Double(deferred)
        }
        let ingressScrape = try await Self.scrape(ingress.adminPort, within: .seconds(30)) { metrics in
            (metrics.value("smarthost_kafka_produce_ack_seconds_count") ?? 0) >= Double(messages)
                && metrics.value("smarthost_kafka_producer_in_flight") == 0
        }
        let reconcilerScrape = try await Self.scrape(reconcilerPort, within: .seconds(60)) { metrics in
            (metrics.value("smarthost_kafka_consumed_total") ?? 0) >= Double(messages + delivered + deferred)
                && (metrics.value("smarthost_redis_command_seconds_count") ?? 0) > 0
        }
        let nodes: [(String, Exposition?, ManagedProcess)] = [
            ("ingress", ingressScrape, ingress.process), ("delivery", deliveryScrape, delivery.process),
            ("reconciler", reconcilerScrape, reconciler.process),
        ]
        for (node, scrape, process) in nodes {
            let metrics = try #require(scrape, "the \(node) node answers /metrics; log:\n\(process.logTail())")
            let problems = try await promtoolProblems(metrics.text)
            #expect(problems.isEmpty, "promtool check metrics on the \(node) node's /metrics:\n\(problems)")
            // Redis latency and errors on every node (each uses Redis: quotas, throttle, registry).
            #expect((metrics.value("smarthost_redis_command_seconds_count") ?? 0) > 0, "\(node): Redis commands timed")
            #expect(metrics.value("smarthost_redis_errors_total", #"kind="timeout""#) != nil, "\(node): Redis error series exported from the start")
            #expect(metrics.value("redis_command_duration_count") == nil, "\(node): the old name is gone")
            #expect(metrics.text.contains("# HELP smarthost_redis_command_seconds "), "\(node): help text")
        }
        if let ingress = ingressScrape {
            #expect((ingress.value("smarthost_kafka_produce_ack_seconds_count") ?? 0) >= Double(messages), "an ack per message at least")
            #expect((ingress.value("smarthost_kafka_produced_total", #"result="acknowledged""#) ?? 0) >= Double(messages))
            #expect(ingress.value("smarthost_ingress_quota_decisions_total") == Double(messages), "a quota decision per message")
            #expect(ingress.value("smarthost_kafka_producer_in_flight") == 0, "every record answered")
        }
        if let node = deliveryScrape {
            #expect((node.value("smarthost_spool_bytes") ?? 0) > 0, "spool.sqlite and its WAL take room")
            #expect((node.value("smarthost_spool_messages") ?? 0) >= Double(deferred), "the deferred messages are still spooled")
            #expect((node.value("smarthost_kafka_consumed_total") ?? 0) >= Double(messages))
            #expect(node.value("smarthost_kafka_consumer_lag") == 0, "every record consumed is spooled and done")
            #expect((node.value("smarthost_kafka_errors_total", #"role="consumer""#) ?? 0) >= 1,
                    "the refusing bootstrap broker is reported: \(node.samples.filter { $0.name == "smarthost_kafka_errors_total" })")
            #expect((node.value("smarthost_kafka_produce_ack_seconds_count") ?? 0) >= Double(delivered + deferred), "events acknowledged")
            #expect(node.value("smarthost_delivery_recipients_total", #"outcome="delivered""#) == Double(delivered))
            // The queue per tenant and domain (sampled every 15 s), retries and soft bounces.
            #expect(node.value("smarthost_queue_depth", #"tenant="acme",domain="inbox.test""#) == Double(deferred)
                    || node.value("smarthost_queue_depth", #"domain="inbox.test",tenant="acme""#) == Double(deferred),
                    "\(node.samples.filter { $0.name == "smarthost_queue_depth" })")
            #expect((node.value("smarthost_queue_oldest_age_seconds", #"inbox.test"#) ?? 0) > 0)
            #expect((node.value("smarthost_delivery_retries_total") ?? 0) >= Double(deferred))
            #expect((node.value("smarthost_delivery_bounces_total", #"kind="soft""#) ?? 0) >= Double(deferred))
            #expect(node.value("smarthost_delivery_bounces_total", #"kind="hard""#) == 0)
        }
        // smarthostctl finds all three nodes through the registry, each ready; the ingress
        // node's own admin route answers behind the token.
        let listed = try await runCommand(SmarthostCLITests.ctl, ["nodes", "--json", "--config", delivery.config])
        #expect(listed.status == 0, "\(listed.errors)")
        for (id, role) in [("metrics-ingress", "ingress"), ("metrics-delivery", "delivery"), ("metrics-reconciler", "reconciler")] {
            #expect(listed.output.contains("\"id\" : \"\(id)\"") && listed.output.contains("\"role\" : \"\(role)\""), "\(listed.output)")
        }
        #expect(listed.output.components(separatedBy: "\"ready\" : \"ready\"").count - 1 == 3, "\(listed.output)")
        let status = try await AdminClient.request("127.0.0.1:\(ingress.adminPort)", path: "/admin/ingress/status", token: DeliveryProcess.adminToken)
        let statusText = String(decoding: status.body, as: UTF8.self)
        #expect(status.status == 200 && statusText.contains("\"address\" : \"127.0.0.1:\(smtpPort)\"")
                && statusText.contains("\"draining\" : false"), "\(statusText)")
        let refused = try await AdminClient.request("127.0.0.1:\(ingress.adminPort)", path: "/admin/ingress/status?x=1", token: DeliveryProcess.adminToken)
        #expect(refused.status == 400)
        if let reconciler = reconcilerScrape {
            #expect(reconciler.value("smarthost_kafka_consumer_lag") != nil)
            #expect(reconciler.value("smarthost_ledger_queued_recipients") != nil)
        }
        print("metrics: promtool checked the ingress, delivery and reconciler expositions (\(nodes.map { "\($0.0) \($0.1?.samples.count ?? 0) samples" }.joined(separator: ", ")))")
    }
}
