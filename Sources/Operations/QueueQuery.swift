import Foundation

/// Where a queued entry is, as an operator sees it (`queue list --state`, the summary's columns).
public enum QueueState: String, Codable, Sendable, CaseIterable {
    /// Waiting for its first attempt (not yet due, or its route being resolved).
    case scheduled
    /// Waiting for a retry after an attempt that did not end it.
    case deferred
    /// Covered by a pause or suspension now: not attempted until it ends.
    case suspended
    /// Due, in its site's ready queue, waiting for a connection.
    case ready
    /// Taken by a connection; its outcome is not yet recorded.
    case inFlight = "in-flight"
    /// No route for its domain.
    case held
    /// Its outcome could not be recorded; the sweep retries it.
    case limbo
}

/// Which queued entries an operator means: every given field must match. The same filter
/// selects for `queue summary`, `list`, `retry` and `delete`, in a URL query or a JSON body.
public struct QueueFilter: Codable, Sendable, Equatable {
    public var tenant: String?
    public var domain: String?
    public var job: String?
    public var pool: String?
    /// Only entries received at least this long ago.
    public var ageMinSeconds: Int?
    public var state: QueueState?

    public init(tenant: String? = nil, domain: String? = nil, job: String? = nil, pool: String? = nil, ageMinSeconds: Int? = nil,
                state: QueueState? = nil) {
        self.tenant = tenant
        self.domain = domain?.lowercased()
        self.job = job
        self.pool = pool
        self.ageMinSeconds = ageMinSeconds
        self.state = state
    }

    /// The query keys a filter reads; any other key is refused.
    public static let queryKeys = ["tenant", "domain", "job", "pool", "age_min", "state"]

    /// Reads `tenant`, `domain`, `job`, `pool`, `age_min` (seconds) and `state` from a URL
    /// query; `extra` names further keys the caller reads itself.
    public init(query: [String: String], extra: Set<String> = []) throws(QueueRequestError) {
        if let unknown = query.keys.sorted().first(where: { !Self.queryKeys.contains($0) && !extra.contains($0) }) {
            throw QueueRequestError("unknown query parameter \(unknown.prefix(40)) (expected \((Self.queryKeys + extra.sorted()).joined(separator: ", ")))")
        }
        var age: Int?
        if let text = query["age_min"] {
            guard let seconds = Int(text), seconds >= 0 else { throw QueueRequestError("age_min must be a number of seconds, got \(text.prefix(40))") }
            age = seconds
        }
        var state: QueueState?
        if let text = query["state"] {
            guard let parsed = QueueState(rawValue: text) else {
                throw QueueRequestError("state must be one of \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")), got \(text.prefix(40))")
            }
            state = parsed
        }
        self.init(tenant: query["tenant"], domain: query["domain"], job: query["job"], pool: query["pool"], ageMinSeconds: age, state: state)
        try validate()
    }

    /// The filter as a URL query (what `init(query:)` reads).
    public var query: [String: String] {
        var query: [String: String] = [:]
        query["tenant"] = tenant
        query["domain"] = domain
        query["job"] = job
        query["pool"] = pool
        query["age_min"] = ageMinSeconds.map(String.init)
        query["state"] = state?.rawValue
        return query
    }

    public func validate() throws(QueueRequestError) {
        for (name, value) in [("tenant", tenant), ("domain", domain), ("job", job), ("pool", pool)] {
            if let value, value.isEmpty || value.count > 255
                || value.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) {
                throw QueueRequestError("\(name) must be 1 to 255 characters without spaces or control characters, got \(value.prefix(40).debugDescription)")
            }
        }
        if let age = ageMinSeconds, age < 0 { throw QueueRequestError("age_min must not be negative") }
    }

    public func matches(tenant: String, domain: String, job: String?, pool: String) -> Bool {
        (self.tenant == nil || self.tenant == tenant) && (self.domain == nil || self.domain == domain)
            && (self.job == nil || self.job == job) && (self.pool == nil || self.pool == pool)
    }

    /// Whether an entry received at `receivedAt` (ms) in `state` matches, at `now` (ms).
    public func matches(tenant: String, domain: String, job: String?, pool: String, receivedAt: UInt64, state: QueueState,
                        now: UInt64) -> Bool {
        guard matches(tenant: tenant, domain: domain, job: job, pool: pool) else { return false }
        if let wanted = self.state, wanted != state { return false }
        if let age = ageMinSeconds, now < receivedAt + UInt64(age) * 1_000 { return false }
        return true
    }
}

/// A queue request that cannot be carried out as asked; nothing was changed.
public struct QueueRequestError: Error, Equatable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// `POST /admin/queue/retry` and `/admin/queue/delete`: which entries, and at most how many
/// this request changes (a client goes on in batches until none is left, showing progress).
public struct QueueActionRequest: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable {
        /// Each recipient gets an AdminBounce event and the sender a DSN.
        case bounce
        /// Each recipient gets an AdminDelete event; nothing is sent.
        case silent
    }

    public var filter: QueueFilter
    /// Delete only: how.
    public var mode: Mode?
    /// Count what would change, change nothing.
    public var dryRun: Bool?
    public var limit: Int?

    public init(filter: QueueFilter, mode: Mode? = nil, dryRun: Bool? = nil, limit: Int? = nil) {
        self.filter = filter
        self.mode = mode
        self.dryRun = dryRun
        self.limit = limit
    }

    public static let maximumLimit = 100_000

    public func validate(deleting: Bool) throws(QueueRequestError) {
        try filter.validate()
        if deleting && mode == nil { throw QueueRequestError(#"a delete needs "mode": "bounce" or "silent""#) }
        if !deleting && mode != nil { throw QueueRequestError("mode is for deletes only") }
        if let limit, !(1...Self.maximumLimit).contains(limit) {
            throw QueueRequestError("limit must be from 1 to \(Self.maximumLimit), got \(limit)")
        }
        if deleting, filter.state == .inFlight || filter.state == .limbo {
            throw QueueRequestError("entries in flight or in limbo cannot be deleted (their outcome is being recorded)")
        }
    }
}

/// What a retry or delete did on one node.
public struct QueueActionResult: Codable, Sendable, Equatable {
    public var node: String
    /// Entries the filter matched, before this request.
    public var matched: Int
    /// Entries retried or deleted now (0 on a dry run).
    public var affected: Int
    /// Recipients those entries had.
    public var recipients: Int
    /// Matched entries left alone, by state (in flight, in limbo, or over the request's limit).
    public var skipped: [String: Int]
    /// Entries whose deletion could not be recorded in the spool (kept in limbo).
    public var failed: Int

    public init(node: String, matched: Int, affected: Int, recipients: Int, skipped: [String: Int], failed: Int) {
        self.node = node
        self.matched = matched
        self.affected = affected
        self.recipients = recipients
        self.skipped = skipped
        self.failed = failed
    }
}

extension QueueActionRequest {
    /// Reads a request body, refusing any key it does not know (a misspelt filter field
    /// must not widen a delete to the whole queue) and anything that is not valid.
    public static func parse(_ body: [UInt8], deleting: Bool) throws(QueueRequestError) -> QueueActionRequest {
        let allowed: Set<String> = deleting ? ["filter", "mode", "dry_run", "limit"] : ["filter", "dry_run", "limit"]
        let filterKeys: Set<String> = ["tenant", "domain", "job", "pool", "age_min_seconds", "state"]
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.isEmpty ? Array("{}".utf8) : body)) as? [String: Any] else {
            throw QueueRequestError("expected a JSON object such as {\"filter\": {\"domain\": \"example.com\"}\(deleting ? ", \"mode\": \"bounce\"" : "")}")
        }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw QueueRequestError("unknown key \(unknown.prefix(40)) (expected \(allowed.sorted().joined(separator: ", ")))")
        }
        if let filter = object["filter"] {
            guard let fields = filter as? [String: Any] else { throw QueueRequestError("filter must be an object") }
            if let unknown = fields.keys.sorted().first(where: { !filterKeys.contains($0) }) {
                throw QueueRequestError("unknown filter key \(unknown.prefix(40)) (expected \(filterKeys.sorted().joined(separator: ", ")))")
            }
        }
        let request: QueueActionRequest
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            var body = object
            if body["filter"] == nil { body["filter"] = [String: Any]() }
            request = try decoder.decode(QueueActionRequest.self, from: JSONSerialization.data(withJSONObject: body))
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                    let DecodingError.dataCorrupted(context) {
            throw QueueRequestError("\(Self.path(context.codingPath)): \(context.debugDescription)")
        } catch {
            throw QueueRequestError("\(error)")
        }
        var normalized = request
        normalized.filter = QueueFilter(tenant: request.filter.tenant, domain: request.filter.domain, job: request.filter.job,
                                        pool: request.filter.pool, ageMinSeconds: request.filter.ageMinSeconds, state: request.filter.state)
        try normalized.validate(deleting: deleting)
        return normalized
    }

    /// A coding path as the body spells it (`filter.age_min_seconds`).
    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { key in
            key.stringValue.reduce(into: "") { text, character in
                text += character.isUppercase ? "_" + character.lowercased() : String(character)
            }
        }.joined(separator: ".")
    }
}
