import Redis

/// A connection limit: the Redis key (without the prefix) of its lease set and how many
/// leases it allows at once, cluster-wide.
public struct LeaseKey: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var limit: Int

    public init(name: String, limit: Int) {
        self.name = name
        self.limit = limit
    }

    public var description: String { "\(name) (max \(limit))" }
}

/// Connection leases shared by every delivery node through Redis: each limit is a sorted set
/// of lease ids scored by their expiry (server clock, milliseconds). A lease is taken before
/// connecting, renewed while the connection lives and released when it closes; the lease of
/// a node that died expires by itself. A connection under several limits holds one lease id
/// in each of their sets, taken and released atomically.
public struct SharedLeases: Sendable {
    private let redis: RedisClient
    private let keyPrefix: String

    public init(redis: RedisClient, keyPrefix: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
    }

    private func redisKeys(_ keys: [LeaseKey]) -> [String] { keys.map { "\(keyPrefix)leases:\($0.name)" } }

    /// Takes as many of `ids` as every limit in `keys` has room for (in order), each valid for
    /// `ttl`; returns those taken.
    public func acquire(_ keys: [LeaseKey], ids: [String], ttl: Duration) async throws(RedisError) -> [String] {
        guard !keys.isEmpty, !ids.isEmpty else { return ids }
        let arguments = [String(ttl.milliseconds), String(ids.count)] + keys.map { String($0.limit) } + ids
        let reply = try await redis.evalScript(Self.acquireScript, keys: redisKeys(keys), arguments: arguments)
        let taken = try reply.int()
        guard (0...Int64(ids.count)).contains(taken) else {
            throw .unexpectedReply(expected: "a lease count 0...\(ids.count)", got: reply.description)
        }
        return Array(ids.prefix(Int(taken)))
    }

    /// Keeps the leases `ids` (each held in every set of its `keys`) for another `ttl`. A lease
    /// Redis no longer holds (it expired while this node could not reach Redis, or Redis lost
    /// its data in a restart) is taken again where every limit has room; the ids that could not
    /// be kept are returned, and their connections must end.
    public func renew(_ leases: [(keys: [LeaseKey], id: String)], ttl: Duration) async throws(RedisError) -> Set<String> {
        var lost: Set<String> = []
        for batch in Self.grouped(leases) {
            let arguments = [String(ttl.milliseconds)] + batch.keys.map { String($0.limit) } + batch.ids
            let reply = try await redis.evalScript(Self.renewScript, keys: redisKeys(batch.keys), arguments: arguments)
            guard case .array(let flags) = reply, flags.count == batch.ids.count else {
                throw .unexpectedReply(expected: "\(batch.ids.count) renewal flags", got: reply.description)
            }
            for (id, flag) in zip(batch.ids, flags) where try flag.int() == 0 { lost.insert(id) }
        }
        return lost
    }

    /// Gives the leases back, so that another node may connect at once.
    public func release(_ leases: [(keys: [LeaseKey], id: String)]) async throws(RedisError) {
        for batch in Self.grouped(leases) {
            _ = try await redis.evalScript(Self.releaseScript, keys: redisKeys(batch.keys), arguments: batch.ids)
        }
    }

    /// Live leases under `key`, cluster-wide.
    public func count(_ key: LeaseKey) async throws(RedisError) -> Int {
        let reply = try await redis.evalScript(Self.countScript, keys: redisKeys([key]), arguments: [])
        return Int(try reply.int())
    }

    /// Leases that share the same sets go in one script call.
    private static func grouped(_ leases: [(keys: [LeaseKey], id: String)]) -> [(keys: [LeaseKey], ids: [String])] {
        var order: [[LeaseKey]] = []
        var ids: [[LeaseKey]: [String]] = [:]
        for lease in leases where !lease.keys.isEmpty {
            if ids[lease.keys] == nil { order.append(lease.keys) }
            ids[lease.keys, default: []].append(lease.id)
        }
        return order.map { ($0, ids[$0]!) }
    }

    /// ARGV: ttl ms, n, one limit per key, then n ids. Expired leases go first.
    static let acquireScript = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local ttl = tonumber(ARGV[1])
        local grant = tonumber(ARGV[2])
        for i, key in ipairs(KEYS) do
          redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
          local room = tonumber(ARGV[2 + i]) - redis.call('ZCARD', key)
          if room < grant then grant = math.max(room, 0) end
        end
        local first = 3 + #KEYS
        for i = 0, grant - 1 do
          for _, key in ipairs(KEYS) do
            redis.call('ZADD', key, now + ttl, ARGV[first + i])
          end
        end
        for _, key in ipairs(KEYS) do
          if grant > 0 then redis.call('PEXPIRE', key, ttl * 2) end
        end
        return grant
        """)

    /// ARGV: ttl ms, one limit per key, then ids. A lease present in every set, or missing
    /// where every set has room, is held for another ttl (1); any other is removed (0).
    static let renewScript = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local ttl = tonumber(ARGV[1])
        for _, key in ipairs(KEYS) do redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
        local held = {}
        for i = 2 + #KEYS, #ARGV do
          local ok = 1
          for k, key in ipairs(KEYS) do
            if not redis.call('ZSCORE', key, ARGV[i]) and redis.call('ZCARD', key) >= tonumber(ARGV[1 + k]) then ok = 0 end
          end
          for _, key in ipairs(KEYS) do
            if ok == 1 then redis.call('ZADD', key, now + ttl, ARGV[i]) else redis.call('ZREM', key, ARGV[i]) end
          end
          held[#held + 1] = ok
        end
        for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl * 2) end
        return held
        """)

    static let releaseScript = RedisScript("""
        for _, key in ipairs(KEYS) do
          for i = 1, #ARGV do redis.call('ZREM', key, ARGV[i]) end
        end
        return 0
        """)

    static let countScript = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        return redis.call('ZCARD', KEYS[1])
        """)
}

extension Duration {
    /// Whole milliseconds, at least 1.
    var milliseconds: Int64 { max(1, Int64(self / .milliseconds(1))) }
}
