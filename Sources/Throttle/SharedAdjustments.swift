import Foundation
import Redis
import SmarthostConfig

/// A cluster-wide change to the limits of some traffic, for a while: set by a traffic shaping
/// rule when a destination's replies say so, or by an operator. Every delivery node applies
/// it within a heartbeat, and it expires by itself.
public struct Adjustment: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        /// No connection, no message: the traffic waits in its scheduled queues, unattempted.
        case suspend
        /// A lower message rate, on top of the configured limits.
        case messageRate = "message_rate"
        /// Fewer concurrent connections, on top of the configured limits.
        case maxConnections = "max_connections"
    }

    /// Which traffic: the selectors given must all match (none given matches nothing). The
    /// site is a site's name (its MX hosts in preference order, or a next hop).
    public typealias Scope = SmarthostConfiguration.Limit.Scope

    public var action: Action
    public var scope: Scope
    /// For `message_rate`: messages per `ratePeriodSeconds`.
    public var rateCount: Int?
    public var ratePeriodSeconds: Int?
    /// For `max_connections`.
    public var maxConnections: Int?
    public var reason: String
    /// `rule:<name>` or `operator`.
    public var setBy: String

    public init(action: Action, scope: Scope, rateCount: Int? = nil, ratePeriodSeconds: Int? = nil,
                maxConnections: Int? = nil, reason: String, setBy: String) {
        self.action = action
        self.scope = scope
        self.rateCount = rateCount
        self.ratePeriodSeconds = ratePeriodSeconds
        self.maxConnections = maxConnections
        self.reason = reason
        self.setBy = setBy
    }

    /// One adjustment per action and scope: setting it again replaces it (and its expiry).
    public var id: String { "\(action.rawValue) \(scope)" }

    /// Why an adjustment read from Redis or given by an operator cannot be applied.
    public var problem: String? {
        if scope.isEmpty { return "an adjustment needs at least one of pool, site, domain, tenant" }
        switch action {
        case .suspend: return nil
        case .messageRate:
            guard let count = rateCount, count > 0, let period = ratePeriodSeconds, period > 0 else {
                return "message_rate needs a positive rate"
            }
            return nil
        case .maxConnections:
            guard let limit = maxConnections, limit >= 0 else { return "max_connections needs a count of at least 0" }
            return nil
        }
    }
}

/// An adjustment in force, with when it was set and when it ends (server clock, ms).
public struct ActiveAdjustment: Sendable, Equatable {
    public var adjustment: Adjustment
    public var expiresAt: Int64
}

/// What `SharedAdjustments.list` read.
public struct AdjustmentList: Sendable {
    /// Bumped on every change.
    public var version: Int64
    /// Redis's clock, ms.
    public var serverTime: Int64
    public var active: [ActiveAdjustment]
    public var unreadable: [UnreadableEntry]
}

/// The adjustments in Redis: a hash of JSON by id, a sorted set of expiries, and a version
/// counter bumped on every change so that nodes fetch the set only when it changed.
public struct SharedAdjustments: Sendable {
    private let redis: RedisClient
    private let keyPrefix: String

    public init(redis: RedisClient, keyPrefix: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
    }

    private var keys: [String] {
        ["\(keyPrefix)adjustments", "\(keyPrefix)adjustments:expiry", "\(keyPrefix)adjustments:version"]
    }

    /// Puts `adjustment` in force for `duration` from now (server clock), replacing one with the same id.
    public func set(_ adjustment: Adjustment, for duration: Duration) async throws(RedisError) {
        if let problem = adjustment.problem { throw .invalidCommand(problem) }
        _ = try await redis.evalScript(Self.setScript, keys: keys,
                                       arguments: [adjustment.id, Self.encode(adjustment), String(duration.milliseconds), "1", "0"])
    }

    /// Counts one occurrence of what a shaping rule watches (`counter`, per fixed `window`) and
    /// puts `adjustment` in force once the count reaches `threshold`, unless it already is.
    /// Returns the count and whether this call set the adjustment.
    public func hit(counter: String, window: Duration, threshold: Int, adjustment: Adjustment,
                    for duration: Duration) async throws(RedisError) -> (count: Int, set: Bool) {
        if let problem = adjustment.problem { throw .invalidCommand(problem) }
        let reply = try await redis.evalScript(
            Self.setScript, keys: keys + ["\(keyPrefix)shaping:\(counter)"],
            arguments: [adjustment.id, Self.encode(adjustment), String(duration.milliseconds), String(threshold),
                        String(window.milliseconds)])
        guard case .array(let fields) = reply, fields.count == 2 else {
            throw .unexpectedReply(expected: "{count, set}", got: reply.description)
        }
        return (Int(try fields[0].int()), try fields[1].int() == 1)
    }

    /// Ends an adjustment before its time; false when there was none with that id.
    public func remove(id: String) async throws(RedisError) -> Bool {
        try await redis.evalScript(Self.removeScript, keys: keys, arguments: [id]).int() == 1
    }

    /// Every adjustment in force, the version they are at and the server's clock. An entry
    /// that does not decode or apply is listed apart (nothing is silently ignored), so that one
    /// bad entry does not hide the others; a reply of the wrong shape is an error.
    public func list() async throws(RedisError) -> AdjustmentList {
        try Self.adjustments(from: try await redis.evalScript(Self.listScript, keys: keys, arguments: []))
    }

    /// The list script's reply `{time, version, (id, expiry, json)...}`.
    static func adjustments(from reply: RedisValue) throws(RedisError) -> AdjustmentList {
        let read = try EntriesReply(reply, expected: "{time, version, (id, expiry, adjustment)...}")
        var list = AdjustmentList(version: read.version, serverTime: read.serverTime, active: [], unreadable: [])
        for entry in read.entries {
            let adjustment: Adjustment
            do {
                adjustment = try JSONDecoder().decode(Adjustment.self, from: Data(entry.json.utf8))
            } catch {
                list.unreadable.append(UnreadableEntry(id: entry.id, problem: "not an adjustment: \(entry.json.prefix(200))"))
                continue
            }
            if let problem = adjustment.problem {
                list.unreadable.append(UnreadableEntry(id: entry.id, problem: problem))
            } else if adjustment.id != entry.id {
                list.unreadable.append(UnreadableEntry(id: entry.id, problem: "stored under another id than its own (\(adjustment.id))"))
            } else {
                list.active.append(ActiveAdjustment(adjustment: adjustment, expiresAt: entry.expiresAt))
            }
        }
        list.active.sort { $0.adjustment.id < $1.adjustment.id }
        return list
    }

    private static func encode(_ adjustment: Adjustment) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(adjustment)) ?? Data(), as: UTF8.self)
    }

    /// KEYS: hash, expiries, version[, counter]. ARGV: id, json, ttl ms, threshold, window ms.
    /// With a counter, the adjustment is set only when the count reaches the threshold and
    /// none with that id is in force.
    static let setScript = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local count = 1
        if KEYS[4] then
          count = redis.call('INCR', KEYS[4])
          if count == 1 then redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5])) end
          local expiry = redis.call('ZSCORE', KEYS[2], ARGV[1])
          if count < tonumber(ARGV[4]) or (expiry and tonumber(expiry) > now) then return {count, 0} end
        end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
        redis.call('INCR', KEYS[3])
        return {count, 1}
        """)

    static let removeScript = RedisScript("""
        local removed = redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        if removed == 1 then redis.call('INCR', KEYS[3]) end
        return removed
        """)

    /// Expired adjustments are removed as they are listed (without a version change: every
    /// node drops them at their expiry by itself).
    static let listScript = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
        for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        local reply = {now, tonumber(redis.call('GET', KEYS[3]) or 0)}
        local live = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
        for i = 1, #live, 2 do
          local json = redis.call('HGET', KEYS[1], live[i])
          if json then
            table.insert(reply, live[i])
            table.insert(reply, tonumber(live[i + 1]))
            table.insert(reply, json)
          end
        end
        return reply
        """)
}

extension SmarthostConfiguration.Limit.Scope {
    public var isEmpty: Bool { pool == nil && site == nil && domain == nil && tenant == nil }
}
