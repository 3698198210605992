import ArgumentParser
import Foundation
import Redis
import SmarthostConfig
import Throttle

/// Runs `body` with a Redis client for the configuration's server; a Redis error ends the
/// command with status 1 and the error, naming the server.
func withRedis<T>(_ configuration: SmarthostConfiguration, _ body: (RedisClient) async throws(RedisError) -> T) async throws -> T {
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

/// Prints JSON when asked for, with sorted keys so that scripts and diffs see a stable shape.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the live nodes of the cluster from the registry in Redis.")

    @OptionGroup var file: ConfigFileOption
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let configuration = try file.load()
        let nodes = try await withRedis(configuration) { redis throws(RedisError) in
            try await NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix).liveNodes()
        }
        if json { return try printJSON(nodes.map(\.announcement)) }
        print("NODE\tROLE\tADMIN\tVERSION")
        for node in nodes {
            let announcement = node.announcement
            print("\(announcement.id)\t\(announcement.role)\t\(announcement.admin)\t\(announcement.version)")
        }
        print("\(nodes.count) live nodes")
    }
}

/// The cluster-wide adjustments that traffic shaping rules set, and an operator's own.
struct Adjustments: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, set or remove cluster-wide adjustments (suspensions, lowered rates or connection limits).",
        subcommands: [List.self, Set.self, Remove.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the adjustments in force.")
        @OptionGroup var file: ConfigFileOption
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() async throws {
            let configuration = try file.load()
            let (_, now, active) = try await withRedis(configuration) { redis throws(RedisError) in
                try await SharedAdjustments(redis: redis, keyPrefix: configuration.redis.keyPrefix).list()
            }
            if json {
                struct Row: Encodable { var id: String; var adjustment: Adjustment; var expiresInSeconds: Int64 }
                return try printJSON(active.map { Row(id: $0.adjustment.id, adjustment: $0.adjustment, expiresInSeconds: ($0.expiresAt - now) / 1_000) })
            }
            print("ID\tSET BY\tEXPIRES IN\tREASON")
            for item in active {
                print("\(item.adjustment.id)\t\(item.adjustment.setBy)\t\((item.expiresAt - now) / 1_000)s\t\(item.adjustment.reason)")
            }
            print("\(active.count) adjustments in force")
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put an adjustment in force on every delivery node (within a second) for a while.")
        @OptionGroup var file: ConfigFileOption
        @Option(help: "suspend, message_rate or max_connections.") var action: String
        @Option(help: "Select the traffic of this pool.") var pool: String?
        @Option(help: "Select the traffic to this site (its name as the events give it).") var site: String?
        @Option(help: "Select the traffic to this domain.") var domain: String?
        @Option(help: "Select this tenant's traffic.") var tenant: String?
        @Option(help: "For message_rate: the rate, such as 60/min.") var rate: String?
        @Option(help: "For max_connections: the connections allowed.") var connections: Int?
        @Option(name: .customLong("for"), help: "How long, such as 30m (1s to 7d).") var duration: String
        @Option(help: "Why, for the operators who see it.") var reason = "set by an operator"

        func run() async throws {
            let configuration = try file.load()
            guard let kind = Adjustment.Action(rawValue: action) else {
                throw ValidationError("--action: expected suspend, message_rate or max_connections, got \(action)")
            }
            let lasting: Duration
            do {
                lasting = try ConfigSyntax.duration(duration)
            } catch {
                throw ValidationError("--for: \(error.message)")
            }
            guard lasting >= .seconds(1), lasting <= .seconds(7 * 86_400) else { throw ValidationError("--for: expected 1s to 7d, got \(duration)") }
            var parsedRate: Rate?
            if let rate {
                do { parsedRate = try Rate(parsing: rate) } catch { throw ValidationError("--rate: \(error.message)") }
            }
            let adjustment = Adjustment(
                action: kind, scope: Adjustment.Scope(pool: pool, site: site, domain: domain?.lowercased(), tenant: tenant),
                rateCount: parsedRate?.count, ratePeriodSeconds: parsedRate.map { max(1, Int($0.per / .seconds(1))) },
                maxConnections: connections, reason: reason, setBy: "operator")
            if let problem = adjustment.problem { throw ValidationError(problem) }
            try await withRedis(configuration) { redis throws(RedisError) in
                try await SharedAdjustments(redis: redis, keyPrefix: configuration.redis.keyPrefix).set(adjustment, for: lasting)
            }
            print("in force: \(adjustment.id) for \(duration)")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End an adjustment before its time (its id as list prints it).")
        @OptionGroup var file: ConfigFileOption
        @Argument(help: "The adjustment's id.") var id: String

        func run() async throws {
            let configuration = try file.load()
            let removed = try await withRedis(configuration) { redis throws(RedisError) in
                try await SharedAdjustments(redis: redis, keyPrefix: configuration.redis.keyPrefix).remove(id: id)
            }
            guard removed else {
                printError("no adjustment \(id) in force")
                throw ExitCode.failure
            }
            print("removed: \(id)")
        }
    }
}
