import ArgumentParser
import CommandSupport
import Foundation
import NodeHTTP
import Operations
import Reconciliation
import Redis
import SmarthostConfig
import Throttle

struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the live nodes of the cluster from the registry in Redis, and whether each says it is ready.")

    @OptionGroup var options: ClusterOptions

    struct Row: Encodable {
        var node: NodeAnnouncement
        /// What the node's /ready answered: "ready", its reason for not being ready, or why it did not answer.
        var ready: String
    }

    func run() async throws {
        let cluster = try Cluster(options)
        let (registered, unreadable) = try await cluster.registry()
        let nodes = registered.map(\.announcement)
        let rows = await withTaskGroup(of: Row.self) { group in
            for node in nodes { group.addTask { Row(node: node, ready: await Self.readiness(node)) } }
            var rows: [Row] = []
            for await row in group { rows.append(row) }
            return rows.sorted { $0.node.id < $1.node.id }
        }
        if options.json {
            try printJSON(rows)
        } else {
            let now = nowMilliseconds()
            print(ReportFormat.table(["NODE", "ROLE", "ADMIN", "VERSION", "UP FOR", "READY"], rows.map {
                [$0.node.id, $0.node.role, $0.node.admin, $0.node.version, TerminalTable.age(now - $0.node.startedAt), $0.ready]
            }), terminator: "")
            print("\(rows.count) live nodes")
        }
        try reportUnreadable(unreadable, kind: .registryEntry)
    }

    /// `GET /ready` (no token needed): "ready", the node's reason, or why it did not answer.
    static func readiness(_ node: NodeAnnouncement) async -> String {
        do {
            let (status, body) = try await AdminClient.request(node.admin, path: "/ready", token: nil, timeout: .seconds(3))
            if status == 200 { return "ready" }
            struct NotReady: Decodable { var reason: String? }
            let reason = (try? JSONDecoder().decode(NotReady.self, from: Data(body)))?.reason
            return "not ready: \(reason ?? "status \(status)")"
        } catch {
            return "NOT ANSWERING: \(error)"
        }
    }
}

/// An adjustment in force, as listed (`suspend list`, `throttle show`).
struct ListedAdjustment: Encodable {
    var id: String
    var adjustment: Adjustment
    var expiresInSeconds: Int64
}

/// The adjustments in force, and the entries no node can apply (named on standard error by
/// `reportUnreadable`).
func activeAdjustments(_ cluster: Cluster) async throws -> (listed: [ListedAdjustment], unreadable: [UnreadableEntry]) {
    let list = try await cluster.withRedis { redis throws(RedisError) in
        try await SharedAdjustments(redis: redis, keyPrefix: cluster.configuration.redis.keyPrefix).list()
    }
    let listed = list.active.map {
        ListedAdjustment(id: $0.adjustment.id, adjustment: $0.adjustment, expiresInSeconds: ($0.expiresAt - list.serverTime) / 1_000)
    }
    return (listed, list.unreadable)
}

func adjustmentsTable(_ listed: [ListedAdjustment]) -> String {
    ReportFormat.table(["ID", "SET BY", "EXPIRES IN", "REASON"], listed.map {
        [$0.id, $0.adjustment.setBy, TerminalTable.age($0.expiresInSeconds * 1_000), $0.adjustment.reason]
    })
}

struct Suspend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The suspensions in force: operator pauses (queue pause) and traffic shaping rules.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the suspensions in force, cluster-wide.")
        @OptionGroup var options: ClusterOptions

        func run() async throws {
            let (adjustments, unreadable) = try await activeAdjustments(try Cluster(options))
            let suspensions = adjustments.filter { $0.adjustment.action == .suspend }
            if options.json {
                try printJSON(suspensions)
            } else {
                print(adjustmentsTable(suspensions), terminator: "")
                print("\(suspensions.count) suspensions in force")
            }
            try reportUnreadable(unreadable, kind: .adjustment)
        }
    }
}

/// Cluster-wide limits: what the configuration sets, and the adjustments in force.
struct Throttle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the cluster-wide limits, or set and remove adjustments (suspensions, lowered rates or connection limits).",
        subcommands: [Show.self, Set.self, Remove.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The configured limits, the adjustments in force and the delivery nodes sharing them.")
        @OptionGroup var options: ClusterOptions

        struct Shown: Encodable {
            var limits: [String]
            var adjustments: [ListedAdjustment]
            var deliveryNodes: [String]
        }

        func run() async throws {
            let cluster = try Cluster(options)
            let (adjustments, unreadable) = try await activeAdjustments(cluster)
            let delivery = try await cluster.liveNodes().map(\.announcement).filter { $0.role == "delivery" }.map(\.id).sorted()
            let limits = cluster.configuration.limits.map(Self.describe)
            if options.json {
                try printJSON(Shown(limits: limits, adjustments: adjustments, deliveryNodes: delivery))
            } else {
                print("configured limits (\(cluster.configuration.limits.count)), shared by \(delivery.count) delivery nodes: \(delivery.joined(separator: ", "))")
                for limit in limits { print("  \(limit)") }
                print("\nadjustments in force (\(adjustments.count))")
                print(adjustmentsTable(adjustments), terminator: "")
                print("\nif Redis is down, each node applies the limits divided by the delivery nodes it last saw (smarthost_throttle_redis_up)")
            }
            try reportUnreadable(unreadable, kind: .adjustment)
        }

        static func describe(_ limit: SmarthostConfiguration.Limit) -> String {
            var parts = ["\(limit.scope):"]
            if let value = limit.maxConnections { parts.append("max_connections \(value)") }
            if let value = limit.maxMessageRate { parts.append("max_message_rate \(value)") }
            if let value = limit.messageRateBurst { parts.append("burst \(value)") }
            if let value = limit.maxMessagesPerConnection { parts.append("max_messages_per_connection \(value)") }
            if let value = limit.maxMessagesPerHour { parts.append("max_messages_per_hour \(value)") }
            if let value = limit.maxMessagesPerDay { parts.append("max_messages_per_day \(value)") }
            return parts.joined(separator: " ")
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put an adjustment in force on every delivery node (within a second) for a while.")
        @OptionGroup var options: ClusterOptions
        @Option(help: "suspend, message_rate or max_connections.") var action: String
        @OptionGroup var scope: ScopeOptions
        @Option(help: "Select the traffic to this site (its name as the events give it).") var site: String?
        @Option(help: "For message_rate: the rate, such as 60/min.") var rate: String?
        @Option(help: "For max_connections: the connections allowed.") var connections: Int?
        @Option(name: .customLong("for"), help: "How long, such as 30m (1s to 30d).") var duration: String
        @Option(help: "Why, for the operators who see it.") var reason = "set by an operator"

        func run() async throws {
            let cluster = try Cluster(options)
            guard let kind = Adjustment.Action(rawValue: action) else {
                throw ValidationError("--action: expected suspend, message_rate or max_connections, got \(action)")
            }
            let lasting = try parseDuration(duration, option: "--for")
            var parsedRate: Rate?
            if let rate {
                do { parsedRate = try Rate(parsing: rate) } catch { throw ValidationError("--rate: \(error.message)") }
            }
            var selected = scope.scope
            selected.site = site
            let adjustment = Adjustment(
                action: kind, scope: selected,
                rateCount: parsedRate?.count, ratePeriodSeconds: parsedRate.map { max(1, Int($0.per / .seconds(1))) },
                maxConnections: connections, reason: reason, setBy: "operator")
            if let problem = adjustment.problem { throw ValidationError(problem) }
            try await cluster.withRedis { redis throws(RedisError) in
                try await SharedAdjustments(redis: redis, keyPrefix: cluster.configuration.redis.keyPrefix).set(adjustment, for: lasting)
            }
            if options.json { return try printJSON(ListedAdjustment(id: adjustment.id, adjustment: adjustment, expiresInSeconds: lasting.components.seconds)) }
            print("in force: \(adjustment.id) for \(duration)")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End an adjustment before its time (its id as throttle show lists it).")
        @OptionGroup var options: ClusterOptions
        @Argument(help: "The adjustment's id.") var id: String

        func run() async throws {
            try await removeAdjustment(try Cluster(options), id: id, json: options.json)
        }
    }
}

/// Ends an adjustment; one not in force is an error (exit 1).
func removeAdjustment(_ cluster: Cluster, id: String, json: Bool) async throws {
    let removed = try await cluster.withRedis { redis throws(RedisError) in
        try await SharedAdjustments(redis: redis, keyPrefix: cluster.configuration.redis.keyPrefix).remove(id: id)
    }
    guard removed else {
        printError("no adjustment \(id) in force")
        throw ExitCode.failure
    }
    if json { return try printJSON(["removed": id]) }
    print("removed: \(id)")
}

/// `--tenant --domain --pool`: which traffic a pause, resume or adjustment covers.
struct ScopeOptions: ParsableArguments {
    @Option(help: "Select this tenant's traffic.") var tenant: String?
    @Option(help: "Select the traffic to this domain.") var domain: String?
    @Option(help: "Select the traffic of this egress pool.") var pool: String?

    var scope: Adjustment.Scope { Adjustment.Scope(pool: pool, domain: domain?.lowercased(), tenant: tenant) }
}

/// A duration option of 1 s to 30 days, such as `90s`, `30m`, `2h`, `7d`.
func parseDuration(_ text: String, option: String) throws -> Duration {
    let duration: Duration
    do {
        duration = try ConfigSyntax.duration(text)
    } catch {
        throw ValidationError("\(option): \(error.message)")
    }
    guard duration >= .seconds(1), duration <= .seconds(30 * 86_400) else { throw ValidationError("\(option): expected 1s to 30d, got \(text)") }
    return duration
}
