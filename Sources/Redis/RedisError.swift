/// Everything the Redis module throws. Each case names what failed (address, command or
/// reply) so a log line or an error reply to an SMTP client explains itself.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No connection could be made to `address` (refused, unresolvable, no answer within the
    /// connect timeout, or AUTH / SELECT rejected).
    case connectionFailed(address: String, reason: String)
    /// The connection to `address` closed (or broke) before the reply arrived.
    case connectionClosed(address: String)
    /// No reply to `command` within `after`; the connection it was sent on has been closed.
    case timeout(command: String, after: Duration)
    /// The server answered with an error reply, e.g. `WRONGTYPE ...` or `ERR unknown command ...`.
    case server(String)
    /// The server's bytes are not valid RESP (or a reply exceeds the configured size limit);
    /// the connection has been closed.
    case protocolError(String)
    /// A reply was well-formed but not of the kind the caller asked for.
    case unexpectedReply(expected: String, got: String)
    /// The command cannot be sent (no arguments, or larger than RESP allows).
    case invalidCommand(String)
    /// The client was closed; it makes no new connections.
    case clientClosed

    public var description: String {
        switch self {
        case .connectionFailed(let address, let reason):
            "cannot connect to Redis at \(address): \(reason)"
        case .connectionClosed(let address):
            "the connection to Redis at \(address) closed before the reply arrived"
        case .timeout(let command, let after):
            "Redis command \(command) got no reply within \(after); its connection was closed"
        case .server(let message):
            "Redis error reply: \(message)"
        case .protocolError(let message):
            "Redis protocol error: \(message); the connection was closed"
        case .unexpectedReply(let expected, let got):
            "unexpected Redis reply: expected \(expected), got \(got)"
        case .invalidCommand(let reason):
            "invalid Redis command: \(reason)"
        case .clientClosed:
            "the Redis client is closed"
        }
    }

    /// The `kind` dimension of the `smarthost_redis_errors_total` counter.
    var metricKind: String {
        switch self {
        case .connectionFailed: "connection_failed"
        case .connectionClosed: "connection_closed"
        case .timeout: "timeout"
        case .server: "server"
        case .protocolError: "protocol"
        case .unexpectedReply: "unexpected_reply"
        case .invalidCommand: "invalid_command"
        case .clientClosed: "client_closed"
        }
    }
}
