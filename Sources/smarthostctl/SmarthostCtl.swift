import ArgumentParser
import CommandSupport
import Foundation
import NodeHTTP
import Reconciliation
import Redis
import SmarthostConfig
import Throttle

@main
struct SmarthostCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smarthostctl",
        abstract: "Operate a running smarthost cluster: every node found through the registry in Redis, their answers merged.",
        discussion: "A node that does not answer is named in the output and makes the command exit 1. docs/operations.md maps PowerMTA, KumoMTA and Postfix commands to these.",
        subcommands: [Nodes.self, Queue.self, Suspend.self, Throttle.self, Reconcile.self, LedgerCommand.self, Diagnose.self])
}

/// `--config FILE` for the operator's commands: the cluster's configuration (its Redis and
/// admin token); `$SMARTHOST_CONFIG` or /etc/smarthost/smarthost.yaml when not given.
struct ClusterOptions: ParsableArguments {
    @Option(name: .long, help: "The cluster configuration file (default: $SMARTHOST_CONFIG, else /etc/smarthost/smarthost.yaml).")
    var config: String = ProcessInfo.processInfo.environment["SMARTHOST_CONFIG"] ?? "/etc/smarthost/smarthost.yaml"

    @Flag(help: "Print JSON instead of a table.") var json = false

    func load() throws -> SmarthostConfiguration {
        try loadConfiguration(config)
    }
}

/// The cluster as the registry in Redis lists it, and its nodes' admin APIs.
struct Cluster {
    let configuration: SmarthostConfiguration

    init(_ options: ClusterOptions) throws {
        configuration = try options.load()
    }

    /// Runs `body` with a Redis client for the configuration's server; a Redis error ends the
    /// command with status 1 and the error, naming the server.
    func withRedis<T>(_ body: (RedisClient) async throws(RedisError) -> T) async throws -> T {
        let redis = RedisClient(configuration: RedisClient.Configuration(configuration.redis))
        let result: Result<T, RedisError>
        do {
            result = .success(try await body(redis))
        } catch {
            result = .failure(error)
        }
        await redis.close()
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            printError("redis \(configuration.redis.address): \(error)")
            throw ExitCode.failure
        }
    }

    /// The registry: live nodes, and entries that do not decode.
    func registry() async throws -> (nodes: [RegisteredNode], unreadable: [UnreadableEntry]) {
        try await withRedis { redis throws(RedisError) in
            try await NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix).liveNodes()
        }
    }

    /// The live nodes. An entry that does not decode could be a node this command would miss:
    /// it is named and the command stops (exit 1); `nodes` lists the rest.
    func liveNodes() async throws -> [RegisteredNode] {
        let (nodes, unreadable) = try await registry()
        try reportUnreadable(unreadable, kind: .registryEntry)
        return nodes
    }

    /// The live nodes of `role`; none is an error (exit 1) that says so.
    func nodes(role: String) async throws -> [NodeAnnouncement] {
        let nodes = try await liveNodes().map(\.announcement).filter { $0.role == role }
        guard !nodes.isEmpty else {
            printError("no live \(role) node in the registry at redis \(configuration.redis.address)")
            throw ExitCode.failure
        }
        return nodes.sorted { $0.id < $1.id }
    }

    /// Asks every node at once; each answer decoded as `T`, each failure kept by node id.
    func ask<T: Decodable & Sendable>(_ nodes: [NodeAnnouncement], _ type: T.Type, method: String = "GET", path: String,
                                      body: [UInt8] = [], timeout: Duration = .seconds(120)) async -> (answers: [T], unanswered: [String: String]) {
        let token = configuration.node.adminToken
        return await withTaskGroup(of: (String, Result<T, AdminClient.Failure>).self) { group in
            for node in nodes {
                group.addTask {
                    do {
                        let (status, answer) = try await AdminClient.request(node.admin, method: method, path: path, token: token, body: body,
                                                                             timeout: timeout)
                        guard status == 200 else {
                            return (node.id, .failure(AdminClient.Failure(description: "\(node.admin) answered \(status): \(String(decoding: answer.prefix(300), as: UTF8.self))")))
                        }
                        return (node.id, .success(try ReportFormat.decode(T.self, from: answer)))
                    } catch let failure as AdminClient.Failure {
                        return (node.id, .failure(failure))
                    } catch {
                        return (node.id, .failure(AdminClient.Failure(description: "\(node.admin): \(error)")))
                    }
                }
            }
            var answers: [(String, T)] = []
            var unanswered: [String: String] = [:]
            for await (id, result) in group {
                switch result {
                case .success(let value): answers.append((id, value))
                case .failure(let failure): unanswered[id] = failure.description
                }
            }
            return (answers.sorted { $0.0 < $1.0 }.map(\.1), unanswered)
        }
    }
}

/// Names the nodes that did not answer on standard error and ends with status 1.
func failIfUnanswered(_ unanswered: [String: String]) throws {
    guard !unanswered.isEmpty else { return }
    for (node, error) in unanswered.sorted(by: { $0.key < $1.key }) { printError("NOT ANSWERING: \(node): \(error)") }
    throw ExitCode.failure
}

/// Where an entry in Redis that the nodes ignore was found.
enum UnreadableKind {
    case adjustment, registryEntry
}

/// Names each entry in Redis that the nodes ignore (and, for an adjustment, how to remove it);
/// exit 1 when there is one.
func reportUnreadable(_ unreadable: [UnreadableEntry], kind: UnreadableKind) throws {
    guard !unreadable.isEmpty else { return }
    for entry in unreadable {
        switch kind {
        case .adjustment:
            printError("UNREADABLE ADJUSTMENT (every node ignores it): \(entry); remove it with: smarthostctl throttle remove '\(entry.id)'")
        case .registryEntry:
            printError("UNREADABLE REGISTRY ENTRY (not counted as a node): \(entry)")
        }
    }
    throw ExitCode.failure
}

/// A URL query string from a dictionary (keys sorted, values percent-encoded).
func queryString(_ query: [String: String]) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    let pairs = query.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")" }
    return pairs.isEmpty ? "" : "?" + pairs.joined(separator: "&")
}
