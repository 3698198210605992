import Foundation
import Operations
import Reconciliation
import Testing
import TestSupport

/// Tansu with the tenants' topics, a redis-server, scripted SMTP destinations and delivery
/// nodes on one configuration written once the destinations' ports are known: what the
/// smarthostctl, orphan-sweep and cluster-limit suites run against. A part that fails to
/// start stops those already started.
struct DeliveryCluster {
    let broker: TansuBroker
    let redis: RedisServer
    let servers: [ScriptedSMTPServer]
    var nodes: [DeliveryProcess]

    static func start(tenants: [String] = ["acme"], scripts: [String] = [#"{"rules": []}"#], nodes names: [String],
                      yaml: ([ScriptedSMTPServer]) throws -> String) async throws -> DeliveryCluster {
        let broker = try await TansuBroker.start()
        var started: [() -> Void] = [broker.stop]
        do {
            try await DeliveryNodeTests.createTopics(broker, tenants: tenants)
            let redis = try await RedisServer.start()
            started.append(redis.stop)
            var servers: [ScriptedSMTPServer] = []
            for script in scripts {
                let server = try await ScriptedSMTPServer.start(script: script)
                started.append(server.stop)
                servers.append(server)
            }
            let configuration = try yaml(servers)
            var nodes: [DeliveryProcess] = []
            for name in names {
                let node = try DeliveryProcess.start(broker: broker, name: name, yaml: configuration, redis: redis.address)
                started.append(node.stop)
                nodes.append(node)
            }
            let cluster = DeliveryCluster(broker: broker, redis: redis, servers: servers, nodes: nodes)
            try await cluster.waitUntilRegistered()
            return cluster
        } catch {
            for stop in started.reversed() { stop() }
            throw error
        }
    }

    /// Returns once every node is in the registry: smarthostctl finds nodes there, and a
    /// command run before a slow node's first heartbeat would find none.
    private func waitUntilRegistered() async throws {
        var last: CommandResult?
        let registered = try await eventuallyAsync(.seconds(60)) {
            let listed = try await ctl(["nodes", "--json"])
            last = listed
            return nodes.allSatisfy { listed.output.contains("\"id\" : \"\($0.process.name)\"") }
        }
        try #require(registered, "every node registers within 60 s; smarthostctl nodes: \(last.map { "\($0.status) \($0.output)\($0.errors)" } ?? "never answered")")
    }

    func stop() {
        for node in nodes { node.stop() }
        for server in servers.reversed() { server.stop() }
        redis.stop()
        broker.stop()
    }

    /// `smarthostctl` with the first node's configuration.
    func ctl(_ arguments: [String]) async throws -> CommandResult {
        try await runCommand(SmarthostCLITests.ctl, arguments + ["--config", nodes[0].config])
    }

    /// `queue summary --json` with `more`, which must succeed.
    func summary(_ more: [String] = []) async throws -> ClusterQueueSummary {
        let result = try await ctl(["queue", "summary", "--json"] + more)
        try #require(result.status == 0, "queue summary: \(result.status) \(result.output)\(result.errors)")
        return try ReportFormat.decode(ClusterQueueSummary.self, from: Array(result.output.utf8))
    }
}
