import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The entry point: a small pool of pipelined connections to one Redis server.
///
/// Connections are made lazily, one per slot, and calls are spread over the slots round-robin.
/// A connection that breaks, closes or times out is dropped; the next call on its slot makes
/// a new one, so once the server is back the same client works again without any action.
/// While the server is unreachable every call fails with a `RedisError` within the connect
/// timeout plus the command timeout; nothing waits forever.
///
/// As a `Service`, `run()` waits for graceful shutdown (or cancellation) and then closes the
/// connections; without a service group, call `close()`.
public final class RedisClient: Sendable, Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// How many connections to spread calls over; values below 1 mean 1.
        public var poolSize: Int
        public var connectTimeout: Duration
        /// How long a command (or a whole pipeline) may wait for its replies.
        public var commandTimeout: Duration
        /// Sent with AUTH on every new connection.
        public var password: String?
        /// Selected with SELECT on every new connection.
        public var database: Int?
        /// The most bytes one reply may take before it is treated as a protocol error.
        public var maxReplyBytes: Int

        public init(host: String = "127.0.0.1", port: Int = 6379, poolSize: Int = 4,
                    connectTimeout: Duration = .seconds(2), commandTimeout: Duration = .seconds(2),
                    password: String? = nil, database: Int? = nil,
                    maxReplyBytes: Int = 512 * 1024 * 1024) {
            self.host = host
            self.port = port
            self.poolSize = poolSize
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.password = password
            self.database = database
            self.maxReplyBytes = maxReplyBytes
        }

        /// "host:port", as error messages and logs name the server.
        public var address: String { "\(host):\(port)" }
    }

    private enum Slot {
        case empty
        case connecting(Task<Result<RedisConnection, RedisError>, Never>)
        case ready(RedisConnection)
    }

    /// Per slot, for logging: warn once when a slot goes down, tell when it comes back.
    private enum Health {
        case new, up, down
    }

    private struct State {
        var slots: [Slot]
        var health: [Health]
        var next = 0
        var closed = false
    }

    public let configuration: Configuration
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>

    public init(configuration: Configuration, eventLoopGroup: MultiThreadedEventLoopGroup = .singleton,
                logger: Logger = Logger(label: "smarthost.redis")) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        let size = max(1, configuration.poolSize)
        state = Mutex(State(slots: Array(repeating: .empty, count: size),
                            health: Array(repeating: .new, count: size)))
        RedisMetrics.exportErrorKinds()
    }

    // MARK: Commands

    /// Sends one command, e.g. `["SET", key, value]`. An error reply throws `RedisError.server`.
    public func send(_ arguments: [RedisArgument]) async throws(RedisError) -> RedisValue {
        try await connection().send(arguments)
    }

    /// Sends all commands on one connection with a single flush and returns their replies in
    /// order. Error replies are kept as `.error` values so each can be inspected.
    public func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RedisValue] {
        try await connection().pipeline(commands)
    }

    /// Runs `script` with EVALSHA; when the server does not know the script (NOSCRIPT), loads it
    /// with SCRIPT LOAD and tries once more.
    public func evalScript(_ script: RedisScript, keys: [String],
                           arguments: [String]) async throws(RedisError) -> RedisValue {
        var command: [RedisArgument] = ["EVALSHA", RedisArgument(script.sha1), RedisArgument(keys.count)]
        command += keys.map { RedisArgument($0) }
        command += arguments.map { RedisArgument($0) }
        do {
            return try await send(command)
        } catch {
            guard case .server(let message) = error, message.hasPrefix("NOSCRIPT") else { throw error }
        }
        let loaded = try await send(["SCRIPT", "LOAD", RedisArgument(script.source)]).string()
        guard loaded == script.sha1 else {
            throw .unexpectedReply(expected: "SHA-1 \(script.sha1) from SCRIPT LOAD", got: loaded)
        }
        return try await send(command)
    }

    public func get(_ key: String) async throws(RedisError) -> String? {
        let reply = try await send(["GET", RedisArgument(key)])
        return reply.isNull ? nil : try reply.string()
    }

    /// SET, with PX when `expiresIn` is given (rounded down to milliseconds, at least 1).
    public func set(_ key: String, to value: String, expiresIn: Duration? = nil) async throws(RedisError) {
        var command: [RedisArgument] = ["SET", RedisArgument(key), RedisArgument(value)]
        if let expiresIn {
            let milliseconds = expiresIn / .milliseconds(1)
            guard milliseconds < 1e18 else { throw .invalidCommand("the expiry \(expiresIn) is too long") }
            command += ["PX", RedisArgument(max(1, Int64(milliseconds)))]
        }
        let reply = try await send(command)
        guard reply == .simpleString("OK") else { throw .unexpectedReply(expected: "OK", got: reply.description) }
    }

    public func incr(_ key: String) async throws(RedisError) -> Int64 {
        try await send(["INCR", RedisArgument(key)]).int()
    }

    public func ping() async throws(RedisError) {
        let reply = try await send(["PING"])
        guard reply == .simpleString("PONG") else { throw .unexpectedReply(expected: "PONG", got: reply.description) }
    }

    // MARK: Lifecycle

    /// Waits for graceful shutdown or cancellation, then closes every connection.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes every connection; later calls throw `RedisError.clientClosed`.
    public func close() async {
        let slots = state.withLock { state in
            state.closed = true
            defer { state.slots = state.slots.map { _ in .empty } }
            return state.slots
        }
        for slot in slots {
            switch slot {
            case .empty:
                break
            case .connecting(let task):
                // The task sees `closed` and closes what it made.
                _ = await task.value
            case .ready(let connection):
                await connection.close()
            }
        }
    }

    // MARK: Pool

    private enum Pick {
        case use(RedisConnection)
        case wait(Task<Result<RedisConnection, RedisError>, Never>)
        case fail(RedisError)
    }

    private func connection() async throws(RedisError) -> RedisConnection {
        let pick: Pick = state.withLock { state in
            guard !state.closed else { return .fail(.clientClosed) }
            let index = state.next
            state.next = (index + 1) % state.slots.count
            switch state.slots[index] {
            case .ready(let connection) where connection.isActive:
                return .use(connection)
            case .connecting(let task):
                return .wait(task)
            case .ready, .empty:
                if case .ready = state.slots[index] { state.health[index] = .down }  // closed, not yet dropped
                let task = Task { await self.connect(slot: index) }
                state.slots[index] = .connecting(task)
                return .wait(task)
            }
        }
        switch pick {
        case .use(let connection): return connection
        case .wait(let task): return try await task.value.get()
        case .fail(let error): throw error
        }
    }

    private func connect(slot index: Int) async -> Result<RedisConnection, RedisError> {
        let result: Result<RedisConnection, RedisError>
        do {
            result = .success(try await RedisConnection.connect(
                configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger))
        } catch {
            result = .failure(error)
        }
        let (closed, previous) = state.withLock { state in
            let previous = state.health[index]
            if !state.closed {
                switch result {
                case .success(let connection):
                    state.slots[index] = .ready(connection)
                    state.health[index] = .up
                case .failure:
                    state.slots[index] = .empty
                    state.health[index] = .down
                }
            }
            return (state.closed, previous)
        }
        switch result {
        case .success(let connection):
            if closed {
                await connection.close()
                return .failure(.clientClosed)
            }
            if previous == .down {
                logger.info("Redis connection re-established", metadata: ["address": "\(connection.address)", "slot": "\(index)"])
            } else {
                logger.debug("Redis connection established", metadata: ["address": "\(connection.address)", "slot": "\(index)"])
            }
            connection.channel.closeFuture.whenComplete { _ in self.dropped(connection, slot: index) }
        case .failure(let error):
            if previous != .down && !closed {
                logger.warning("Redis connection failed", metadata: ["address": "\(configuration.address)", "slot": "\(index)", "error": "\(error)"])
            }
        }
        return result
    }

    /// Forgets a connection that closed, so the next call on its slot reconnects.
    private func dropped(_ connection: RedisConnection, slot index: Int) {
        let closed = state.withLock { state in
            if case .ready(let current) = state.slots[index], current === connection {
                state.slots[index] = .empty
                state.health[index] = .down
            }
            return state.closed
        }
        if !closed {
            logger.warning("Redis connection lost; the next call reconnects",
                           metadata: ["address": "\(connection.address)", "slot": "\(index)"])
        }
    }
}
