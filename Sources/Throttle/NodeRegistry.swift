import Foundation
import Redis
import ServiceLifecycle
import SmarthostConfig

extension RedisClient.Configuration {
    /// The client settings a node derives from the configuration file.
    public init(_ settings: SmarthostConfiguration.RedisSettings) {
        self.init(host: settings.address.host, port: settings.address.port, poolSize: settings.poolSize,
                  connectTimeout: settings.connectTimeout, commandTimeout: settings.commandTimeout,
                  password: settings.password, database: settings.database)
    }
}

/// A node as it announces itself in the registry.
public struct NodeAnnouncement: Codable, Sendable, Equatable {
    public var id: String
    /// `delivery` or `ingress`.
    public var role: String
    /// The admin HTTP address (health, metrics).
    public var admin: String
    /// Milliseconds since the epoch, the node's clock.
    public var startedAt: Int64
    public var version: String

    public init(id: String, role: String, admin: String, startedAt: Int64, version: String) {
        self.id = id
        self.role = role
        self.admin = admin
        self.startedAt = startedAt
        self.version = version
    }
}

/// An entry in Redis (an adjustment, a node's announcement) that does not decode or cannot
/// apply: written by hand, by another version, or corrupted. Reported, never used, and it does
/// not stop the entries beside it from being used.
public struct UnreadableEntry: Sendable, Equatable, CustomStringConvertible {
    public var id: String
    public var problem: String

    public var description: String { "\(id): \(problem)" }
}

/// The reply of the registry and adjustments scripts: Redis's clock (ms), a version, then an
/// (id, expiry ms, JSON) triple per entry. A reply of another shape is an error naming
/// `expected`; what the JSON says is for the caller to judge.
struct EntriesReply {
    var serverTime: Int64
    var version: Int64
    var entries: [(id: String, expiresAt: Int64, json: String)] = []

    init(_ reply: RedisValue, expected: String) throws(RedisError) {
        guard case .array(let fields) = reply, fields.count >= 2, (fields.count - 2) % 3 == 0 else {
            throw .unexpectedReply(expected: expected, got: reply.description)
        }
        serverTime = try fields[0].int()
        version = try fields[1].int()
        for start in stride(from: 2, to: fields.count, by: 3) {
            entries.append((try fields[start].string(), try fields[start + 1].int(), try fields[start + 2].string()))
        }
    }
}

/// A live node of the registry, and when its heartbeat expires (server clock).
public struct RegisteredNode: Sendable, Equatable {
    public var announcement: NodeAnnouncement
    public var expiresAt: Int64
}

/// What one heartbeat learnt: the live nodes, the server's clock and the version of the
/// shared adjustments (so a node fetches them only when they changed).
public struct Heartbeat: Sendable, Equatable {
    public var nodes: [RegisteredNode]
    /// Registry entries whose announcement does not decode: not counted as nodes.
    public var unreadable: [UnreadableEntry]
    public var serverTime: Int64
    public var adjustmentsVersion: Int64
}

/// The node registry in Redis: each node heartbeats with an expiry; a node that stops
/// heartbeating drops out by itself. One script call per heartbeat, which also returns the
/// live nodes and the adjustments version.
public struct NodeRegistry: Sendable {
    private let redis: RedisClient
    private let keyPrefix: String

    public init(redis: RedisClient, keyPrefix: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
    }

    private var keys: [String] { ["\(keyPrefix)nodes", "\(keyPrefix)nodes:info", "\(keyPrefix)adjustments:version"] }

    /// Announces `node` as live for `ttl`.
    public func heartbeat(_ node: NodeAnnouncement, ttl: Duration) async throws(RedisError) -> Heartbeat {
        let json = String(decoding: (try? JSONEncoder().encode(node)) ?? Data(), as: UTF8.self)
        let reply = try await redis.evalScript(Self.script, keys: keys, arguments: [node.id, String(ttl.milliseconds), json])
        return try Self.heartbeat(from: reply)
    }

    /// Takes `id` out of the registry at once (a graceful stop), instead of at its expiry.
    public func leave(_ id: String) async throws(RedisError) {
        _ = try await redis.pipeline([["ZREM", RedisArgument(keys[0]), RedisArgument(id)],
                                      ["HDEL", RedisArgument(keys[1]), RedisArgument(id)]])
    }

    /// The live nodes, and the entries whose announcement does not decode, without announcing anything.
    public func liveNodes() async throws(RedisError) -> (nodes: [RegisteredNode], unreadable: [UnreadableEntry]) {
        let heartbeat = try Self.heartbeat(from: try await redis.evalScript(Self.script, keys: keys, arguments: []))
        return (heartbeat.nodes, heartbeat.unreadable)
    }

    /// `{server_ms, version, id1, expiry1, json1, ...}`. A reply of another shape is an error; an
    /// announcement that does not decode (another version's, or corrupted) is listed apart, so
    /// that one bad entry cannot take every delivery node off the shared limits.
    static func heartbeat(from reply: RedisValue) throws(RedisError) -> Heartbeat {
        let read = try EntriesReply(reply, expected: "a heartbeat {time, version, (id, expiry, announcement)...}")
        var heartbeat = Heartbeat(nodes: [], unreadable: [], serverTime: read.serverTime, adjustmentsVersion: read.version)
        for entry in read.entries {
            guard let announcement = try? JSONDecoder().decode(NodeAnnouncement.self, from: Data(entry.json.utf8)) else {
                heartbeat.unreadable.append(UnreadableEntry(id: entry.id, problem: "not a node announcement: \(entry.json.prefix(200))"))
                continue
            }
            guard announcement.id == entry.id else {
                heartbeat.unreadable.append(UnreadableEntry(id: entry.id, problem: "announces another node (\(announcement.id))"))
                continue
            }
            heartbeat.nodes.append(RegisteredNode(announcement: announcement, expiresAt: entry.expiresAt))
        }
        heartbeat.nodes.sort { $0.announcement.id < $1.announcement.id }
        return heartbeat
    }

    /// KEYS: the expiry set, the announcements, the adjustments version. ARGV: id, ttl ms,
    /// announcement (none: only list).
    static let script = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        if #ARGV == 3 then
          redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
          redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
        end
        local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
        for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local reply = {now, tonumber(redis.call('GET', KEYS[3]) or 0)}
        local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
        for i = 1, #live, 2 do
          local info = redis.call('HGET', KEYS[2], live[i])
          if info then
            table.insert(reply, live[i])
            table.insert(reply, tonumber(live[i + 1]))
            table.insert(reply, info)
          end
        end
        return reply
        """)
}

/// Keeps a node listed in the registry while it runs (a heartbeat every second, a 3-second
/// expiry) and takes it out when it stops: how an ingress node or the reconciler shows up in
/// `smarthostctl nodes`. Delivery nodes heartbeat through their `ClusterThrottle`, which also
/// learns the live nodes and adjustments from each beat. A Redis outage only delays the next
/// beat; the node drops out of the list until Redis answers again.
public struct RegistryPresence: Service {
    let registry: NodeRegistry
    let announcement: NodeAnnouncement

    public init(registry: NodeRegistry, announcement: NodeAnnouncement) {
        self.registry = registry
        self.announcement = announcement
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = try? await registry.heartbeat(announcement, ttl: .seconds(3))
                try? await Task.sleep(for: .seconds(1))
            }
        }
        try? await registry.leave(announcement.id)
    }
}
