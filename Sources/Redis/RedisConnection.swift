import Logging
import Metrics
import NIOCore
import NIOPosix

/// One TCP connection to Redis: hiredis' reader and NIO's channel glued by
/// `RedisCommandHandler`. Any number of commands may be in flight at once (pipelining).
final class RedisConnection: Sendable {
    let channel: any Channel
    let address: String
    private let commandTimeout: Duration

    private init(channel: any Channel, address: String, commandTimeout: Duration) {
        self.channel = channel
        self.address = address
        self.commandTimeout = commandTimeout
    }

    /// Connects within `configuration.connectTimeout`, then sends AUTH and SELECT when
    /// configured. Every failure is a `RedisError.connectionFailed`.
    static func connect(configuration: RedisClient.Configuration, eventLoopGroup: any EventLoopGroup,
                        logger: Logger) async throws(RedisError) -> RedisConnection {
        let address = configuration.address
        let maxReplyBytes = configuration.maxReplyBytes
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(
                            RedisReplyDecoder(maxReplyBytes: maxReplyBytes),
                            RedisCommandHandler(address: address, logger: logger))
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .get()
        } catch {
            let failure = RedisError.connectionFailed(
                address: address, reason: describeConnectError(error, timeout: configuration.connectTimeout))
            RedisMetrics.count(failure)
            throw failure
        }
        let connection = RedisConnection(channel: channel, address: address,
                                         commandTimeout: configuration.commandTimeout)
        do {
            if let password = configuration.password {
                _ = try await connection.send(["AUTH", RedisArgument(password)])
            }
            if let database = configuration.database {
                _ = try await connection.send(["SELECT", RedisArgument(database)])
            }
        } catch {
            await connection.close()
            let failure = RedisError.connectionFailed(address: address, reason: "connection set-up failed: \(error)")
            RedisMetrics.count(failure)
            throw failure
        }
        return connection
    }

    var isActive: Bool { channel.isActive }

    /// Sends one command; an error reply throws `RedisError.server`.
    func send(_ arguments: [RedisArgument]) async throws(RedisError) -> RedisValue {
        let label = arguments.first?.label ?? "(none)"
        let reply = try await execute([arguments], metricLabel: label, errorLabel: label)[0]
        if case .error(let message) = reply {
            let error = RedisError.server(message)
            RedisMetrics.count(error)
            throw error
        }
        return reply
    }

    /// Writes all commands with one flush and returns their replies in order; error replies
    /// stay `.error` values in the result.
    func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RedisValue] {
        guard !commands.isEmpty else { return [] }
        let replies = try await execute(commands, metricLabel: "PIPELINE",
                                        errorLabel: "PIPELINE (\(commands.count) commands)")
        for case .error(let message) in replies { RedisMetrics.count(.server(message)) }
        return replies
    }

    func close() async {
        try? await channel.close()
    }

    private func execute(_ commands: [[RedisArgument]], metricLabel: String,
                         errorLabel: String) async throws(RedisError) -> [RedisValue] {
        let start = ContinuousClock.now
        defer { RedisMetrics.recordDuration(ContinuousClock.now - start, command: metricLabel) }
        do {
            var encoded = channel.allocator.buffer(capacity: 64 * commands.count)
            for command in commands { try HiredisEncoder.encode(command, into: &encoded) }
            let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
            let request = RedisRequest(encoded: encoded, replyCount: commands.count, command: errorLabel,
                                       timeout: commandTimeout, promise: promise)
            // The handler fails the promise itself once it has the request; this covers a
            // write that never reaches it because the pipeline is already torn down.
            let address = address
            channel.writeAndFlush(request).whenFailure { _ in
                promise.fail(RedisError.connectionClosed(address: address))
            }
            return try await promise.futureResult.get()
        } catch {
            let failure = error as? RedisError ?? .connectionClosed(address: address)
            RedisMetrics.count(failure)
            throw failure
        }
    }
}

/// A readable reason for a failed connect, e.g. "connection refused (errno: 111)".
private func describeConnectError(_ error: any Error, timeout: Duration) -> String {
    switch error {
    case ChannelError.connectTimeout:
        "no connection within \(timeout)"
    case let error as NIOConnectionError where !error.connectionErrors.isEmpty:
        error.connectionErrors.map { "\($0.target): \($0.error)" }.joined(separator: "; ")
    default:
        "\(error)"
    }
}

/// The module's two metrics (help text and buckets: Observability's MetricCatalog).
enum RedisMetrics {
    static func recordDuration(_ duration: Duration, command: String) {
        let (seconds, attoseconds) = duration.components
        Timer(label: "smarthost_redis_command_seconds", dimensions: [("command", command)])
            .recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    static func count(_ error: RedisError) {
        errors(error.metricKind).increment()
    }

    /// Exports a zero for each kind of error the connections count, so that an alert on the
    /// counter's rate has a series before the first error.
    static func exportErrorKinds() {
        let counted: [RedisError] = [.connectionFailed(address: "", reason: ""), .connectionClosed(address: ""),
                                     .timeout(command: "", after: .zero), .server(""), .protocolError(""), .invalidCommand("")]
        for error in counted { _ = errors(error.metricKind) }
    }

    private static func errors(_ kind: String) -> Counter {
        Counter(label: "smarthost_redis_errors_total", dimensions: [("kind", kind)])
    }
}
