import NIOCore
import NIOHTTP1
import NIOPosix
import Observability

/// What the node's HTTP endpoint answers: liveness, readiness and the Prometheus exposition.
/// The admin API of the operator issue grows on the same listener.
public struct NodeEndpoints: Sendable {
    /// Why the node is not ready, or nil when it is (for example "Kafka unreachable").
    public var notReadyReason: @Sendable () -> String?
    /// The Prometheus text exposition.
    public var metrics: @Sendable () -> String

    public init(notReadyReason: @escaping @Sendable () -> String?, metrics: @escaping @Sendable () -> String) {
        self.notReadyReason = notReadyReason
        self.metrics = metrics
    }

    /// The status, content type and body for a request; pure, so it is tested without sockets.
    func respond(method: HTTPMethod, uri: String) -> (HTTPResponseStatus, String, String) {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        guard method == .GET || method == .HEAD else {
            return (.methodNotAllowed, "application/json", #"{"error":"only GET and HEAD are supported"}"# + "\n")
        }
        switch path {
        case "/health":
            return (.ok, "application/json", #"{"status":"alive"}"# + "\n")
        case "/ready":
            if let reason = notReadyReason() {
                return (.serviceUnavailable, "application/json", #"{"status":"not ready","reason":"# + JSON.string(reason) + "}\n")
            }
            return (.ok, "application/json", #"{"status":"ready"}"# + "\n")
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", metrics())
        default:
            return (.notFound, "application/json", #"{"error":"no such endpoint; try /health, /ready or /metrics"}"# + "\n")
        }
    }
}

/// Serves `NodeEndpoints` over HTTP/1.1 on one address.
public final class NodeHTTPServer: Sendable {
    public let channel: any Channel
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(channel: any Channel) {
        self.channel = channel
    }

    public static func bind(host: String, port: Int, endpoints: NodeEndpoints,
                            group: MultiThreadedEventLoopGroup = .singleton) async throws -> NodeHTTPServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(EndpointHandler(endpoints: endpoints))
                }
            }
            .bind(host: host, port: port)
            .get()
        return NodeHTTPServer(channel: channel)
    }

    public func close() async throws {
        try await channel.close()
    }
}

final class EndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: NodeEndpoints
    private var request: HTTPRequestHead?

    init(endpoints: NodeEndpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // no endpoint takes a body
        case .end:
            guard let head = request else { return }
            request = nil
            let (status, contentType, body) = endpoints.respond(method: head.method, uri: head.uri)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}
