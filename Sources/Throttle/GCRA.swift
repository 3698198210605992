import Redis

/// A rate as GCRA sees it (the generic cell rate algorithm, as redis-cell implements it): one
/// unit every `emissionInterval`, with up to `burst` units allowed at once above that pace.
public struct GCRARate: Sendable, Hashable {
    public var emissionInterval: Duration
    public var burst: Int

    /// `count` units per `period`; `burst` defaults to the whole count, so that a quota of
    /// 1000/h can be used in one go and then refills steadily.
    public init(count: Int, per period: Duration, burst: Int? = nil) {
        precondition(count > 0, "a rate counts at least one unit")
        emissionInterval = period / count
        self.burst = max(1, burst ?? count)
    }
}

/// What taking from a limit gave.
public enum ThrottleDecision: Sendable, Equatable {
    case allowed
    /// Over the limit; the next unit is allowed after `retryAfter`.
    case limited(retryAfter: Duration)
}

/// A GCRA limit shared through Redis by every node that names the same key: one atomic Lua
/// script per decision, on the server's clock (nodes' clocks may differ).
public struct SharedRateLimiter: Sendable {
    private let redis: RedisClient
    private let keyPrefix: String

    public init(redis: RedisClient, keyPrefix: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
    }

    /// Takes `units` from the limit `key` at `rate`, or nothing when that would exceed it.
    public func take(_ key: String, rate: GCRARate, units: Int = 1) async throws(RedisError) -> ThrottleDecision {
        let interval = max(1, Int(rate.emissionInterval / .microseconds(1)))
        let reply = try await redis.evalScript(Self.script, keys: ["\(keyPrefix)gcra:\(key)"],
                                               arguments: [String(interval), String(rate.burst), String(units)])
        return try Self.decision(from: reply)
    }

    /// The script's reply `{allowed, retry_after_microseconds}`; anything else is an error.
    static func decision(from reply: RedisValue) throws(RedisError) -> ThrottleDecision {
        guard case .array(let fields) = reply, fields.count == 2 else {
            throw .unexpectedReply(expected: "a GCRA decision {allowed, retry_after}", got: reply.description)
        }
        let allowed = try fields[0].int()
        let retryAfter = try fields[1].int()
        guard allowed == 0 || allowed == 1, retryAfter >= 0 else {
            throw .unexpectedReply(expected: "a GCRA decision {0|1, microseconds >= 0}", got: reply.description)
        }
        return allowed == 1 ? .allowed : .limited(retryAfter: .microseconds(retryAfter))
    }

    /// The theoretical arrival time (TAT), in microseconds of the server's clock, is the
    /// key's value; it expires once it is in the past, so idle limits cost nothing.
    static let script = RedisScript("""
        local interval = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local units = tonumber(ARGV[3])
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or now)
        if tat < now then tat = now end
        local new_tat = tat + interval * units
        local allow_at = new_tat - interval * burst
        if allow_at > now then
          return {0, allow_at - now}
        end
        redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
        return {1, 0}
        """)
}
