import NIOHTTP1
import Testing
import TestSupport
@testable import NodeHTTP

@Suite struct NodeEndpointTests {
    let ready = NodeEndpoints(notReadyReason: { nil }, metrics: { "smarthost_up 1\n" })
    let notReady = NodeEndpoints(notReadyReason: { "Kafka unreachable: \"timed out\"\n" }, metrics: { "" })

    @Test func healthReadinessAndMetrics() {
        #expect(ready.respond(method: .GET, uri: "/health") == (.ok, "application/json", "{\"status\":\"alive\"}\n"))
        #expect(ready.respond(method: .GET, uri: "/ready?verbose=1") == (.ok, "application/json", "{\"status\":\"ready\"}\n"))
        #expect(ready.respond(method: .GET, uri: "/metrics").2 == "smarthost_up 1\n")
        #expect(ready.respond(method: .HEAD, uri: "/health").0 == .ok)
    }

    @Test func notReadySaysWhyInValidJSON() {
        let (status, _, body) = notReady.respond(method: .GET, uri: "/ready")
        #expect(status == .serviceUnavailable)
        #expect(body == "{\"status\":\"not ready\",\"reason\":\"Kafka unreachable: \\\"timed out\\\"\\n\"}\n")
        #expect(notReady.respond(method: .GET, uri: "/health").0 == .ok, "alive even when not ready")
    }

    @Test(arguments: [(HTTPMethod.GET, "/nope", HTTPResponseStatus.notFound), (.POST, "/ready", .methodNotAllowed),
                      (.DELETE, "/health", .methodNotAllowed), (.GET, "", .notFound), (.GET, "/health/../metrics", .notFound)])
    func everythingElseIsAClearError(_ method: HTTPMethod, _ uri: String, _ status: HTTPResponseStatus) {
        let (got, type, body) = ready.respond(method: method, uri: uri)
        #expect(got == status)
        #expect(type == "application/json" && body.hasPrefix("{\"error\":"))
    }
}

@Suite struct NodeHTTPServerTests {
    @Test func answersOverARealSocketAndSurvivesGarbage() async throws {
        let server = try await NodeHTTPServer.bind(host: "127.0.0.1", port: 0,
                                                   endpoints: NodeEndpoints(notReadyReason: { nil }, metrics: { "m 1\n" }))
        defer { Task { try? await server.close() } }
        let port = try #require(server.localAddress?.port)
        let text = try #require(Loopback.httpGet(port: port, path: "/ready"))
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.hasSuffix("{\"status\":\"ready\"}\n"))
        let garbage = Loopback.exchange(port: port, request: Array("\u{1}\u{2} NOT HTTP\r\n\r\n".utf8)) { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
        #expect(garbage.map { String(decoding: $0, as: UTF8.self).hasPrefix("HTTP/1.1 400") } ?? true, "a 400 or a closed connection, never a crash")
        let again = Loopback.exchange(port: port, request: Array("GET /health HTTP/1.0\r\n\r\n".utf8)) { String(decoding: $0, as: UTF8.self).hasSuffix("}\n") }
        #expect(again.map { String(decoding: $0, as: UTF8.self).contains("alive") } == true, "still serving")
    }
}

/// The admin API's gate: a bearer token, checked before any route runs; precise 4xx answers.
@Suite struct AdminGateTests {
    static let token = "0123456789abcdef-token"
    let admin = NodeEndpoints(notReadyReason: { nil }, metrics: { "" }, adminToken: token,
                              admin: { request in AdminResponse(status: 200, body: "{\"path\":\"\(request.path)\"}\n") })

    @Test func theRightTokenReachesTheRoutesWithQueryAndBody() {
        let decision = admin.decide(method: .POST, uri: "/admin/faults/drop-scheduled?count=5&note=a%20b", authorization: "Bearer \(Self.token)",
                                    body: Array("{}".utf8))
        #expect(decision == .admin(AdminRequest(method: "POST", path: "/admin/faults/drop-scheduled", query: ["count": "5", "note": "a b"],
                                                body: Array("{}".utf8))))
    }

    @Test(arguments: [nil, "", "Bearer", "Bearer ", "Bearer wrong", "bearer \(AdminGateTests.token)", "Basic \(AdminGateTests.token)",
                      "Bearer \(AdminGateTests.token)x", "Bearer \(AdminGateTests.token.dropLast())"])
    func anyOtherAuthorizationIsRefusedWith401(_ authorization: String?) {
        guard case .respond(let status, let type, let body) = admin.decide(method: .GET, uri: "/admin/queue/counts",
                                                                            authorization: authorization, body: []) else {
            Issue.record("reached the routes with \(authorization ?? "nil")")
            return
        }
        #expect(status == .unauthorized && type == "application/json" && body.contains("bearer token is required"))
    }

    @Test func withoutATokenConfiguredTheAdminAPIIsOff() {
        let off = NodeEndpoints(notReadyReason: { nil }, metrics: { "" })
        guard case .respond(let status, _, let body) = off.decide(method: .GET, uri: "/admin/ledger", authorization: "Bearer x", body: []) else {
            Issue.record("an admin route without a token")
            return
        }
        #expect(status == .forbidden && body.contains("node.admin_token"))
    }

    @Test func aQueryThatIsNotPercentEncodingIsA400() {
        guard case .respond(let status, _, _) = admin.decide(method: .GET, uri: "/admin/queue/counts?x=%zz", authorization: "Bearer \(Self.token)",
                                                             body: []) else {
            Issue.record("reached the routes")
            return
        }
        #expect(status == .badRequest)
    }

    @Test func theOtherEndpointsNeedNoToken() {
        #expect(admin.decide(method: .GET, uri: "/health", authorization: nil, body: []) == .respond(.ok, "application/json", "{\"status\":\"alive\"}\n"))
    }

    /// Over a socket: an unknown route is a JSON 404, a body over 8 MiB a 413, and the client
    /// reads both.
    @Test func overARealSocketWithTheAdminClient() async throws {
        let server = try await NodeHTTPServer.bind(host: "127.0.0.1", port: 0, endpoints: NodeEndpoints(
            notReadyReason: { nil }, metrics: { "" }, adminToken: Self.token,
            admin: { $0.path == "/admin/echo" ? AdminResponse(status: 200, body: String(decoding: $0.body, as: UTF8.self)) : nil }))
        defer { Task { try? await server.close() } }
        let address = "127.0.0.1:\(try #require(server.localAddress?.port))"
        let echo = try await AdminClient.request(address, method: "POST", path: "/admin/echo", token: Self.token, body: Array("hello".utf8))
        #expect(echo.status == 200 && echo.body == Array("hello".utf8))
        let missing = try await AdminClient.request(address, path: "/admin/nope", token: Self.token)
        #expect(missing.status == 404 && String(decoding: missing.body, as: UTF8.self).contains("no such admin endpoint"))
        let huge = try await AdminClient.request(address, method: "POST", path: "/admin/echo", token: Self.token,
                                                 body: Array(repeating: 0x41, count: NodeEndpoints.maximumBody + 1))
        #expect(huge.status == 413)
        await #expect(throws: AdminClient.Failure.self) { try await AdminClient.request("127.0.0.1:1", path: "/admin/x", token: nil) }
        await #expect(throws: AdminClient.Failure.self) { try await AdminClient.request("no-port", path: "/admin/x", token: nil) }
    }
}
