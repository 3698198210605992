import Foundation
import Kafka
import Testing
import TestSupport

/// The `smarthost` binary, run as a process: arguments and files are an external boundary.
@Suite struct SmarthostCLITests {
    /// `scripts/test` builds the binary with the tests (`swift build --build-tests`).
    static let binary = "\(repositoryRoot)/.build/debug/smarthost"
    /// The operator's tool, built beside it.
    static let ctl = "\(repositoryRoot)/.build/debug/smarthostctl"

    func run(_ arguments: String...) async throws -> CommandResult {
        try await runCommand(Self.binary, arguments)
    }

    func temporaryFile(_ contents: String) throws -> String {
        let path = NSTemporaryDirectory() + "smarthost-cli-\(UUID().uuidString).yaml"
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theExampleConfigurationChecksOut() async throws {
        let result = try await run("check-config", "--config", "\(repositoryRoot)/cluster/config-example.yaml")
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("3 tenants: smarthost.acme smarthost.globex smarthost.initech"))
    }

    @Test func aMissingFileIsNamedAndNothingElseHappens() async throws {
        let result = try await run("check-config", "--config", "/nonexistent/smarthost.yaml")
        #expect(result.status == 2)
        #expect(result.errors.contains("/nonexistent/smarthost.yaml"))
        #expect(result.output.isEmpty)
    }

    @Test func everyErrorOfABadFileIsReportedWithItsPosition() async throws {
        let path = try temporaryFile("node: {id: n1}\nkafka:\n  brokers: []\nredis: {address: 'nohost'}\ntenants: {acme: {}}\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await run("check-config", "--config", path)
        #expect(result.status == 2)
        let lines = result.errors.split(separator: "\n")
        #expect(lines.count == 2, "\(result.errors)")
        #expect(lines.allSatisfy { $0.hasPrefix(Substring(path + ":")) })
        #expect(result.errors.contains("kafka.brokers"))
        #expect(result.errors.contains("redis.address"))
    }

    @Test func topicsCreatesTheEventsTopicAndEveryTenantsTopic() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let path = try temporaryFile("""
            node: {id: cli-test}
            kafka: {brokers: ["\(broker.bootstrap)"], topic_prefix: relay}
            redis: {address: "127.0.0.1:6379"}
            tenants: {acme: {}, globex: {}}
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await run("topics", "--config", path, "--partitions", "2")
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output == "relay-events\t2 partitions\nrelay.acme\t2 partitions\nrelay.globex\t2 partitions\n")
        let topics = try await KafkaAdmin(bootstrapServers: [broker.bootstrap]).topics()
        #expect(topics.filter { $0.name.hasPrefix("relay") } == [
            TopicDescription(name: "relay-events", partitions: 2),
            TopicDescription(name: "relay.acme", partitions: 2),
            TopicDescription(name: "relay.globex", partitions: 2),
        ])
        // Running it again changes nothing and succeeds.
        #expect(try await run("topics", "--config", path, "--partitions", "2").output == result.output)
    }

    @Test(arguments: [
        (["no-such-command"], "Unexpected argument 'no-such-command'"),
        (["check-config"], "Missing expected argument '--config <config>'"),
        (["check-config", "--config"], "Missing value for '--config <config>'"),
        (["topics", "--config", "x.yaml", "--partitions", "0"], "--partitions must be between 1 and 10000"),
        (["topics", "--config", "x.yaml", "--partitions", "many"], "The value 'many' is invalid for '--partitions <partitions>'"),
        (["topics", "--config", "x.yaml", "--replication-factor", "99"], "--replication-factor must be between 1 and 16"),
        (["reconcile"], "Unexpected argument 'reconcile'"),
        (["reconciler"], "Missing expected argument '--config <config>'"),
    ])
    func badArgumentsGetAClearErrorAndAUsageExitCode(_ arguments: [String], _ message: String) async throws {
        let result = try await runCommand(Self.binary, arguments)
        #expect(result.status == 64, "\(arguments): \(result.errors)")
        #expect(result.errors.contains(message), "\(arguments): \(result.errors)")
    }

    @Test func versionNamesTheLoadedLibrdkafkaAndAcceptsIt() async throws {
        let result = try await run("version")
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("librdkafka 2."))
        #expect(result.output.contains("(at least 2.2.0 required)"))
    }
}
