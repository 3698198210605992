import Redis

/// One cluster-wide message limit: a GCRA rate, or a count per fixed window of the server's
/// clock (PowerMTA's max-msg-per-hour and -per-day count per clock hour and day).
public enum Quota: Sendable, Hashable, CustomStringConvertible {
    case rate(GCRARate)
    case perWindow(count: Int, window: Duration)

    public var description: String {
        switch self {
        case .rate(let rate): "\(rate.emissionInterval) interval, burst \(rate.burst)"
        case .perWindow(let count, let window): "\(count) per \(window)"
        }
    }
}

/// A quota and the Redis key (without the prefix) that every node taking from it names.
public struct QuotaKey: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var quota: Quota

    public init(name: String, quota: Quota) {
        self.name = name
        self.quota = quota
    }

    public var description: String { "\(name) (\(quota))" }
}

/// What a batch request got: `granted` units (possibly fewer than asked for), and when none
/// was granted, how long until one is.
public struct QuotaGrant: Sendable, Equatable {
    public var granted: Int
    public var retryAfter: Duration

    public init(granted: Int, retryAfter: Duration) {
        self.granted = granted
        self.retryAfter = retryAfter
    }
}

/// Message quotas shared by every delivery node through Redis: one atomic script takes a
/// batch of units from several quotas at once (all of a message's limits), granting the most
/// that all of them allow, so a node pays one round trip per batch, not per message.
public struct SharedQuotas: Sendable {
    private let redis: RedisClient
    private let keyPrefix: String

    public init(redis: RedisClient, keyPrefix: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
    }

    /// Takes up to `units` (at least 1) from every quota in `keys`: each is charged the same number.
    public func take(_ keys: [QuotaKey], units: Int) async throws(RedisError) -> QuotaGrant {
        guard !keys.isEmpty else { return QuotaGrant(granted: units, retryAfter: .zero) }
        var arguments = [String(max(1, units))]
        for key in keys {
            switch key.quota {
            case .rate(let rate):
                arguments += ["r", String(max(1, Int(rate.emissionInterval / .microseconds(1)))), String(rate.burst)]
            case .perWindow(let count, let window):
                arguments += ["w", String(count), String(max(1, Int(window / .microseconds(1))))]
            }
        }
        let reply = try await redis.evalScript(Self.script, keys: keys.map { "\(keyPrefix)quota:\($0.name)" }, arguments: arguments)
        return try Self.grant(from: reply, asked: max(1, units))
    }

    /// The script's reply `{granted, retry_after_microseconds}`; anything else is an error.
    static func grant(from reply: RedisValue, asked: Int) throws(RedisError) -> QuotaGrant {
        guard case .array(let fields) = reply, fields.count == 2 else {
            throw .unexpectedReply(expected: "a quota grant {granted, retry_after}", got: reply.description)
        }
        let granted = try fields[0].int()
        let retryAfter = try fields[1].int()
        guard (0...Int64(asked)).contains(granted), retryAfter >= 0, granted > 0 || retryAfter > 0 else {
            throw .unexpectedReply(expected: "a quota grant {0...\(asked), microseconds >= 0}", got: reply.description)
        }
        return QuotaGrant(granted: Int(granted), retryAfter: .microseconds(retryAfter))
    }

    /// ARGV: units, then per key a kind and two numbers: `r interval burst` (GCRA; the key
    /// holds the theoretical arrival time in microseconds of the server's clock) or
    /// `w count window` (a counter per window, under the key suffixed with the window's index).
    static let script = RedisScript("""
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        local grant = tonumber(ARGV[1])
        local wait = 0
        local state = {}
        for i, key in ipairs(KEYS) do
          local kind = ARGV[i * 3 - 1]
          local a = tonumber(ARGV[i * 3])
          local b = tonumber(ARGV[i * 3 + 1])
          local room
          if kind == 'r' then
            local tat = tonumber(redis.call('GET', key) or now)
            if tat < now then tat = now end
            room = math.floor((now - tat) / a) + b
            if room < 1 then wait = math.max(wait, tat + a - a * b - now) end
            state[i] = tat
          else
            local window = math.floor(now / b)
            local counter = key .. ':' .. string.format('%d', window)
            room = a - tonumber(redis.call('GET', counter) or 0)
            if room < 1 then wait = math.max(wait, (window + 1) * b - now) end
            state[i] = counter
          end
          if room < grant then grant = math.max(room, 0) end
        end
        if grant < 1 then return {0, math.max(wait, 1)} end
        for i, key in ipairs(KEYS) do
          local a = tonumber(ARGV[i * 3])
          local b = tonumber(ARGV[i * 3 + 1])
          if ARGV[i * 3 - 1] == 'r' then
            local tat = state[i] + a * grant
            redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
          else
            redis.call('INCRBY', state[i], grant)
            redis.call('PEXPIRE', state[i], math.ceil(b / 1000) + 1000)
          end
        end
        return {grant, 0}
        """)
}
