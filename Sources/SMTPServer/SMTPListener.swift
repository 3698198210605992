import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol
import Synchronization

/// A listening SMTP socket: each accepted connection gets its own `SMTPServerHandler`, behind a
/// `ProxyProtocolHandler` when the listener sits behind a load balancer that sends the header,
/// and behind TLS from the first byte with `implicitTLS` (port 465); otherwise `tls` is
/// offered as STARTTLS.
public final class SMTPListener: Sendable {
    public let channel: any Channel
    private let connections: ConnectionCount

    /// The address the listener is bound to (useful when it was asked for port 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    /// Client connections open now (a draining node waits for them to end).
    public var openConnections: Int { connections.value.load(ordering: .relaxed) }

    private init(channel: any Channel, connections: ConnectionCount) {
        self.channel = channel
        self.connections = connections
    }

    public static func bind(host: String, port: Int, policy: SessionPolicy, sink: any MessageSink,
                            resolveTenant: @escaping TenantResolver, authenticator: (any Authenticator)? = nil,
                            proxyProtocol: Bool = false,
                            tls: NIOSSLContext? = nil, implicitTLS: Bool = false, timeouts: SessionTimeouts = SessionTimeouts(),
                            messageReplyWritten: (@Sendable (SMTPReply) -> Void)? = nil,
                            group: MultiThreadedEventLoopGroup = .singleton,
                            logger: Logger = Logger(label: "smarthost.smtp.server")) async throws -> SMTPListener {
        let connections = ConnectionCount()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                connections.value.add(1, ordering: .relaxed)
                channel.closeFuture.whenComplete { _ in connections.value.subtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    if proxyProtocol {
                        try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler())
                    }
                    if implicitTLS, let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        SMTPServerHandler(policy: policy, sink: sink, resolveTenant: resolveTenant, authenticator: authenticator,
                                          expectsProxyHeader: proxyProtocol,
                                          tls: tls, encrypted: implicitTLS && tls != nil, timeouts: timeouts,
                                          messageReplyWritten: messageReplyWritten, logger: logger))
                }
            }
            .bind(host: host, port: port)
            .get()
        return SMTPListener(channel: channel, connections: connections)
    }

    /// Stops accepting connections (sessions in progress go on).
    public func close() async throws {
        try await channel.close()
    }
}

/// A counter shared by a listener and its connections' close callbacks.
final class ConnectionCount: Sendable {
    let value = Atomic<Int>(0)
}
