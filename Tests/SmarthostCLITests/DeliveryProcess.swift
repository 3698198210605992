import Events
import Foundation
import Kafka
import NodeHTTP
import QueueRecord
import SMTPProtocol
import Testing
import TestSupport

/// A `smarthost delivery` process on a configuration made of the node, kafka and redis
/// sections (pointing at `broker`, spool in `spoolDirectory`) followed by `yaml`.
struct DeliveryProcess {
    let process: ManagedProcess
    let spoolDirectory: String
    let config: String
    let adminPort: Int

    static func start(broker: TansuBroker, name: String, yaml: String, spoolDirectory: String? = nil,
                      redis: String = "127.0.0.1:6379") throws -> DeliveryProcess {
        let directory = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let spool = spoolDirectory ?? "\(directory)/spool"
        let config = "\(directory)/cluster.yaml"
        let adminPort = try Loopback.freePort()
        try """
            node: {id: \(name), log_format: json, admin_listen: "127.0.0.1:\(adminPort)", spool_dir: "\(spool)", admin_token: \(Self.adminToken)}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s, session_timeout: 6s, metadata_refresh: 1s}
            redis: {address: "\(redis)"}
            \(yaml)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        return try start(name: name, config: config, spool: spool, adminPort: adminPort)
    }

    /// Replaces what follows the node, kafka and redis sections of the configuration file
    /// (for a reload).
    func rewrite(yaml: String) throws {
        let header = try String(contentsOfFile: config, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).prefix(3)
        try (header.joined(separator: "\n") + "\n" + yaml + "\n").write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// Starts again on the same configuration and spool (after a crash, say).
    func restart() throws -> DeliveryProcess {
        try Self.start(name: process.name, config: config, spool: spoolDirectory, adminPort: adminPort)
    }

    private static func start(name: String, config: String, spool: String, adminPort: Int) throws -> DeliveryProcess {
        let log = "\(config).\(UUID().uuidString.prefix(4)).log"
        let process = try ManagedProcess(name: name, executable: SmarthostCLITests.binary,
                                         arguments: ["delivery", "--config", config], logPath: log)
        return DeliveryProcess(process: process, spoolDirectory: spool, config: config, adminPort: adminPort)
    }

    static let adminToken = "test-admin-token-0123456789"

    /// A request to the node's admin API; the test fails with the answer unless it is a 200.
    /// A node just started is given 30 s to open its admin listener.
    func admin(_ method: String = "GET", _ path: String, body: [UInt8] = []) async throws -> [UInt8] {
        let started = ContinuousClock.now
        var reply: (status: Int, body: [UInt8])?
        while reply == nil {
            do {
                reply = try await AdminClient.request("127.0.0.1:\(adminPort)", method: method, path: path, token: Self.adminToken,
                                                      body: body, timeout: .seconds(120))
            } catch let failure as AdminClient.Failure where failure.description.hasPrefix("cannot connect")
                        && ContinuousClock.now - started < .seconds(30) && process.isRunning {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        let (status, answer) = reply!
        try #require(status == 200, "\(method) \(path): \(status) \(String(decoding: answer, as: UTF8.self))")
        return answer
    }

    /// The node's local event log (events.jsonl), parsed: the attempts' events, and with
    /// `receptions` the Reception written as each message was spooled too.
    func events(receptions: Bool = false) throws -> [MessageEvent] {
        let path = "\(spoolDirectory)/events.jsonl"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { try MessageEvent(json: Array($0.utf8)) }.filter { receptions || $0.type != .reception }
    }

    /// A metric's value from the node's /metrics (summed over its label sets), nil if the node
    /// does not answer or does not have it yet.
    func metric(_ name: String, labels: String = "") -> Double? {
        guard let text = Loopback.httpGet(port: adminPort, path: "/metrics") else { return nil }
        let values = text.split(separator: "\n").filter { line in
            line.hasPrefix(name) && (line.dropFirst(name.count).first == " " || line.dropFirst(name.count).first == "{")
                && (labels.isEmpty || line.contains(labels))
        }.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        return values.isEmpty ? nil : values.reduce(0, +)
    }

    /// Resident memory of the process, from /proc.
    func residentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        return kibibytes * 1024
    }

    func stop() { process.stop() }
}

/// What follows the node, kafka and redis sections for a node that delivers tenant `acme`'s
/// mail for `inbox.test` to a test destination on `port`, retrying every second (class `fast`):
/// `delivery` is the inside of the delivery section, `more` any further sections.
func inboxTestYAML(destination port: Int, delivery: String, more: String) -> String {
    """
    traffic_classes:
      fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 1h}
    tenants:
      acme: {trusted_networks: [127.0.0.0/8]}
    routes:
      - {domain: inbox.test, next_hop: "127.0.0.1:\(port)"}
    delivery: {\(delivery)}
    \(more)
    """
}

/// Puts messages into a tenant's topic as an ingress node would; returns where Kafka put each
/// record (in no particular order).
@discardableResult
func enqueue(_ messages: [AcceptedMessage], broker: TansuBroker, topicPrefix: String = "smarthost") async throws -> [DeliveryReport] {
    let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: [broker.bootstrap]))
    let reports = try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
        for message in messages {
            let record = OutgoingRecord(topic: "\(topicPrefix).\(message.tenant)", key: Array(message.id.text.utf8), value: message.content,
                                        headers: message.headers.map { KafkaHeader(name: $0.name, string: $0.value) })
            group.addTask { try await producer.send(record) }
        }
        return try await group.reduce(into: []) { $0.append($1) }
    }
    await producer.close()
    return reports
}

func testMessage(tenant: String = "acme", to recipients: [String], trafficClass: String = "fast",
                 lane: AcceptedMessage.Lane = .normal, subject: String = "test") -> AcceptedMessage {
    let id = MessageID.generate()
    let content = "Received: by test; \(id)\r\nFrom: app@acme.test\r\nSubject: \(subject)\r\nMessage-Id: <\(id.text)@acme.test>\r\n\r\nBody of \(id.text)\r\n"
    return AcceptedMessage(id: id, tenant: tenant, sender: Mailbox(localPart: "app", domain: "acme.test"),
                           recipients: recipients.map { try! Mailbox(parsing: Substring($0), allowUTF8: false) },
                           receivedAt: MessageID.currentMilliseconds(), client: "127.0.0.1:1", helo: "test", lane: lane,
                           trafficClass: trafficClass, content: Array(content.utf8))
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
func eventually(_ limit: Duration, every interval: Duration = .milliseconds(200), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try condition()
}

/// `eventually` for a condition that has to wait itself (a command, a request).
func eventuallyAsync(_ limit: Duration, every interval: Duration = .milliseconds(500), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}
