import Foundation
import Redis
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a client for `server`, closing the client however `body` ends.
private func withClient<T>(
    _ server: RedisServer, poolSize: Int = 2,
    connectTimeout: Duration = .milliseconds(500), commandTimeout: Duration = .milliseconds(500),
    password: String? = nil, database: Int? = nil,
    _ body: (RedisClient) async throws -> T
) async throws -> T {
    let client = RedisClient(configuration: .init(
        host: "127.0.0.1", port: server.port, poolSize: poolSize, connectTimeout: connectTimeout,
        commandTimeout: commandTimeout, password: password, database: database))
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

/// The `RedisError` `body` throws, or nil (an issue is recorded) when it throws nothing or
/// something else.
private func redisError(_ body: () async throws -> Void) async -> RedisError? {
    do {
        try await body()
        Issue.record("expected a RedisError, nothing was thrown")
    } catch let error as RedisError {
        return error
    } catch {
        Issue.record("expected a RedisError, got \(error)")
    }
    return nil
}

/// Each test starts its own server and stops it in a `defer`.
@Suite("RedisClient against a real redis-server")
struct RedisClientTests {
    @Test func luaScriptRoundTripAndNoscriptRecovery() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let script = RedisScript("""
            local total = redis.call('INCRBY', KEYS[1], ARGV[1])
            return {total, tostring(total / 4), {ARGV[2], 'done'}}
            """)
        try await withClient(server) { client in
            let first = try await client.evalScript(script, keys: ["counter"], arguments: ["5", "tag"])
            #expect(first == .array([.integer(5), .bulkString(Array("1.25".utf8)),
                                     .array([.bulkString(Array("tag".utf8)), .bulkString(Array("done".utf8))])]))
            #expect(try await client.send(["SCRIPT", "LOAD", RedisArgument(script.source)]).string() == script.sha1)

            #expect(try await client.send(["SCRIPT", "FLUSH"]) == .simpleString("OK"))
            #expect(try await client.send(["SCRIPT", "EXISTS", RedisArgument(script.sha1)]) == .array([.integer(0)]))
            let second = try await client.evalScript(script, keys: ["counter"], arguments: ["1", "again"])
            let values = try second.array()
            #expect(try values[0].int() == 6)
            #expect(try values[1].string() == "1.5")
            #expect(try values[2].array()[0].string() == "again")
        }
    }

    @Test func thousandIncrsInOnePipelineAndManyConcurrentSends() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withClient(server, poolSize: 3) { client in
            let replies = try await client.pipeline(Array(repeating: ["INCR", "pipelined"], count: 1000))
            #expect(replies == (1...1000).map { RedisValue.integer($0) })

            try await withThrowingTaskGroup(of: (Int, RedisValue).self) { group in
                for task in 0..<200 {
                    group.addTask { (task, try await client.send(["ECHO", "task-\(task)"])) }
                }
                var answered = 0
                for try await (task, reply) in group {
                    #expect(try reply.string() == "task-\(task)")
                    answered += 1
                }
                #expect(answered == 200)
            }
            #expect(try await client.get("pipelined") == "1000")
        }
    }

    @Test func crashedServerFailsFastAndTheSameClientRecoversAfterRestart() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        // One connection: the second ping must find the connection the first saw closed. With
        // two, it could land on the other one before its event loop noticed the crash.
        try await withClient(server, poolSize: 1) { client in
            try await client.set("before", to: "crash")
            #expect(try await client.get("before") == "crash")

            server.crash()
            let start = ContinuousClock.now
            let error = await redisError { try await client.ping() }
            #expect(ContinuousClock.now - start < .milliseconds(500) + .seconds(2))
            switch error {
            case .connectionClosed(address: server.address)?, .connectionFailed(address: server.address, _)?:
                break
            default:
                Issue.record("expected connectionClosed or connectionFailed for \(server.address), got \(String(describing: error))")
            }
            // Still down: a new connection attempt is refused at once.
            let refused = await redisError { try await client.ping() }
            if case .connectionFailed(address: server.address, _)? = refused {} else {
                Issue.record("expected connectionFailed for \(server.address), got \(String(describing: refused))")
            }

            try await server.restart()
            var attempts = 0
            while true {
                attempts += 1
                do {
                    try await client.ping()
                    break
                } catch where attempts < 3 {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(attempts <= 2)
            // Every pool slot works again, and the restarted server has no data.
            for _ in 0..<4 { #expect(try await client.get("before") == nil) }
        }
    }

    @Test func pausedServerTimesOutAndTheClientRecoversAfterResume() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withClient(server, poolSize: 1, commandTimeout: .milliseconds(400)) { client in
            try await client.ping()

            server.pause()
            let start = ContinuousClock.now
            let error = await redisError { _ = try await client.get("anything") }
            let elapsed = ContinuousClock.now - start
            #expect(error == .timeout(command: "GET", after: .milliseconds(400)))
            #expect(elapsed >= .milliseconds(400))
            #expect(elapsed < .milliseconds(400) + .seconds(2))

            server.resume()
            try await client.ping()
            #expect(try await client.incr("after-resume") == 1)
        }
    }

    @Test func errorRepliesAreServerErrorsAndTheConnectionStaysUsable() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let serverErrors = #"smarthost_redis_errors_total{kind="server"}"#
        let pipelines = #"smarthost_redis_command_seconds_count{command="PIPELINE"}"#
        _ = TestMetrics.registry
        let (errorsBefore, pipelinesBefore) = (TestMetrics.value(of: serverErrors) ?? 0, TestMetrics.value(of: pipelines) ?? 0)
        try await withClient(server, poolSize: 1) { client in
            let connectionID = try await client.send(["CLIENT", "ID"]).int()
            #expect(try await client.send(["LPUSH", "list", "a"]) == .integer(1))

            let wrongType = await redisError { _ = try await client.get("list") }
            #expect(wrongType == .server("WRONGTYPE Operation against a key holding the wrong kind of value"))
            let unknown = await redisError { _ = try await client.send(["NOSUCHCOMMAND", "x"]) }
            guard case .server(let message)? = unknown else {
                Issue.record("expected a server error, got \(String(describing: unknown))")
                return
            }
            #expect(message.hasPrefix("ERR unknown command 'NOSUCHCOMMAND'"))

            let mixed = try await client.pipeline([["INCR", "list"], ["PING"]])
            #expect(mixed == [.error("WRONGTYPE Operation against a key holding the wrong kind of value"),
                              .simpleString("PONG")])
            #expect(try await client.send(["CLIENT", "ID"]).int() == connectionID)
        }
        // Other tests count errors at the same time: at least these three (one in the pipeline).
        #expect(try #require(TestMetrics.value(of: serverErrors)) >= errorsBefore + 3)
        #expect(try #require(TestMetrics.value(of: pipelines)) >= pipelinesBefore + 1, "a pipeline is timed as one command")
    }

    @Test func authAndSelectOnEveryNewConnection() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withClient(server) { client async throws in
            #expect(try await client.send(["CONFIG", "SET", "requirepass", "s3cret"]) == .simpleString("OK"))
        }
        try await withClient(server, password: "s3cret", database: 3) { client in
            try await client.set("where", to: "db3", expiresIn: .seconds(60))
            #expect(try await client.get("where") == "db3")
            let ttl = try await client.send(["PTTL", "where"]).int()
            #expect(ttl > 50_000 && ttl <= 60_000)
        }
        try await withClient(server, password: "s3cret") { client async throws in
            #expect(try await client.get("where") == nil)
        }
        try await withClient(server, password: "wrong") { client in
            let error = await redisError { try await client.ping() }
            guard case .connectionFailed(address: server.address, let reason)? = error else {
                Issue.record("expected connectionFailed, got \(String(describing: error))")
                return
            }
            #expect(reason.contains("WRONGPASS"))
        }
    }

    @Test func noServerFailsWithConnectionFailedAndClosedClientRefusesCalls() async throws {
        let port = try Loopback.freePort()
        let client = RedisClient(configuration: .init(port: port, connectTimeout: .milliseconds(500)))
        let start = ContinuousClock.now
        let error = await redisError { try await client.ping() }
        #expect(ContinuousClock.now - start < .seconds(2))
        guard case .connectionFailed(address: "127.0.0.1:\(port)", let reason)? = error else {
            Issue.record("expected connectionFailed, got \(String(describing: error))")
            return
        }
        #expect(!reason.isEmpty)
        await client.close()
        #expect(await redisError { try await client.ping() } == .clientClosed)
    }

    @Test func runClosesTheClientWhenCancelled() async throws {
        let client = RedisClient(configuration: .init(port: try Loopback.freePort()))
        let service = Task { try await client.run() }
        service.cancel()
        try await service.value
        #expect(await redisError { try await client.ping() } == .clientClosed)
    }

    @Test func unansweredConnectFailsWithinTheConnectTimeout() async throws {
        let listener = try BlackHoleListener()
        let client = RedisClient(configuration: .init(port: listener.port, connectTimeout: .milliseconds(300)))
        let start = ContinuousClock.now
        let error = await redisError { try await client.ping() }
        let elapsed = ContinuousClock.now - start
        await client.close()
        #expect(error == .connectionFailed(address: "127.0.0.1:\(listener.port)", reason: "no connection within 0.3 seconds"))
        #expect(elapsed >= .milliseconds(300))
        #expect(elapsed < .milliseconds(300) + .seconds(2))
    }
}

/// A loopback listener that never accepts. Its backlog of 0 holds one connection, made here;
/// later connects stay unanswered, as to a host behind a dropping firewall.
private final class BlackHoleListener {
    let port: Int
    private let listener: Int32
    private let filler: Int32

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 0) == 0 && getsockname(listener, $0, &length) == 0
                    && connect(filler, $0, length) == 0
            }
        }
        guard listener >= 0, filler >= 0, listening else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            close(listener)
            close(filler)
            throw POSIXError(code)
        }
        self.listener = listener
        self.filler = filler
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        close(listener)
        close(filler)
    }
}
