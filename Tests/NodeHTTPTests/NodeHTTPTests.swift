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
