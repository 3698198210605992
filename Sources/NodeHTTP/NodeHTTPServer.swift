import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Observability

/// A request to the admin API (`/admin/...`), once its bearer token was checked.
public struct AdminRequest: Sendable, Equatable {
    public var method: String
    /// Without the query.
    public var path: String
    public var query: [String: String]
    public var body: [UInt8]

    public init(method: String, path: String, query: [String: String] = [:], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
    }
}

public struct AdminResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: String

    public init(status: Int, contentType: String = "application/json", body: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// A JSON error body: `{"error": "..."}`.
    public static func error(_ status: Int, _ message: String) -> AdminResponse {
        AdminResponse(status: status, body: #"{"error":"# + JSON.string(message) + "}\n")
    }

    /// What a node's `/admin/faults/` endpoints answer without `testing.fault_injection: true`.
    public static let faultInjectionOff = error(403, "fault injection is off: it exists only on a node configured with testing.fault_injection: true")

    /// A 200 with `value` as JSON: snake_case keys, sorted, indented (as every admin answer).
    public static func json<T: Encodable>(_ value: T) -> AdminResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return AdminResponse(status: 200, body: String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self) + "\n")
    }
}

/// The admin routes of a node: nil means no such route (404).
public typealias AdminRoutes = @Sendable (AdminRequest) async -> AdminResponse?

/// What the node's HTTP endpoint answers: liveness, readiness, the Prometheus exposition, and
/// the admin API behind a bearer token.
public struct NodeEndpoints: Sendable {
    /// Why the node is not ready, or nil when it is (for example "Kafka unreachable").
    public var notReadyReason: @Sendable () -> String?
    /// The Prometheus text exposition.
    public var metrics: @Sendable () -> String
    /// `node.admin_token`; without one the admin API is off.
    public var adminToken: String?
    public var admin: AdminRoutes?

    /// The largest request body the admin API reads.
    public static let maximumBody = 8 * 1024 * 1024

    public init(notReadyReason: @escaping @Sendable () -> String?, metrics: @escaping @Sendable () -> String,
                adminToken: String? = nil, admin: AdminRoutes? = nil) {
        self.notReadyReason = notReadyReason
        self.metrics = metrics
        self.adminToken = adminToken
        self.admin = admin
    }

    /// What to do with a request: answer at once, or hand it to the admin routes. Pure, so it
    /// is tested without sockets.
    enum Decision: Equatable {
        case respond(HTTPResponseStatus, String, String)
        case admin(AdminRequest)
    }

    func decide(method: HTTPMethod, uri: String, authorization: String?, body: [UInt8]) -> Decision {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? uri
        if path == "/admin" || path.hasPrefix("/admin/") {
            guard let adminToken, admin != nil else {
                return .respond(.forbidden, "application/json", #"{"error":"the admin API is off on this node: set node.admin_token"}"# + "\n")
            }
            guard let authorization, authorization.hasPrefix("Bearer "),
                  Self.constantTimeEquals(Array(authorization.dropFirst("Bearer ".count).utf8), Array(adminToken.utf8)) else {
                return .respond(.unauthorized, "application/json", #"{"error":"a bearer token is required (Authorization: Bearer <node.admin_token>)"}"# + "\n")
            }
            guard let query = parts.count > 1 ? Self.query(String(parts[1])) : [:] else {
                return .respond(.badRequest, "application/json", #"{"error":"the query string is not valid percent-encoded key=value pairs"}"# + "\n")
            }
            return .admin(AdminRequest(method: method.rawValue, path: path, query: query, body: body))
        }
        let (status, type, text) = respond(method: method, uri: uri)
        return .respond(status, type, text)
    }

    /// Key/value pairs of a query string; nil when one is not valid percent-encoding.
    static func query(_ text: String) -> [String: String]? {
        var result: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = String(kv[0]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding,
                  let value = (kv.count > 1 ? String(kv[1]) : "").replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            else { return nil }
            result[key] = value
        }
        return result
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// The status, content type and body for a request outside the admin API.
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
            return (.notFound, "application/json", #"{"error":"no such endpoint; try /health, /ready, /metrics or /admin/..."}"# + "\n")
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
    private var body: [UInt8] = []
    private var tooLarge = false

    init(endpoints: NodeEndpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            body = []
            tooLarge = false
        case .body(var buffer):
            if body.count + buffer.readableBytes > NodeEndpoints.maximumBody {
                tooLarge = true
            } else if !tooLarge {
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            }
        case .end:
            guard let head = request else { return }
            request = nil
            if tooLarge {
                write(context, head, .payloadTooLarge, "application/json",
                      #"{"error":"the request body is larger than 8 MiB"}"# + "\n", close: true)
                return
            }
            let decision = endpoints.decide(method: head.method, uri: head.uri, authorization: head.headers.first(name: "Authorization"),
                                            body: body)
            body = []
            switch decision {
            case .respond(let status, let type, let text):
                write(context, head, status, type, text, close: false)
            case .admin(let adminRequest):
                let routes = endpoints.admin!
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.makeFutureWithTask {
                    await routes(adminRequest) ?? .error(404, "no such admin endpoint: \(adminRequest.method) \(adminRequest.path)")
                }.whenSuccess { response in
                    let (handler, context) = loopBound.value
                    handler.write(context, head, HTTPResponseStatus(statusCode: response.status), response.contentType, response.body, close: false)
                }
            }
        }
    }

    private func write(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ contentType: String,
                       _ body: String, close: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: "Bearer") }
        let keepAlive = head.isKeepAlive && !close
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
