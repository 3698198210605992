import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The repository's root, found from this file's location (Sources/TestSupport/...).
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A real `redis-server` on a free loopback port, without persistence.
public final class RedisServer: Sendable {
    public let port: Int
    public var address: String { "127.0.0.1:\(port)" }
    private let directory: String
    private let process: Mutex<ManagedProcess?>

    public init() throws {
        directory = try makeScratchDirectory("redis")
        var lastError: Error?
        for _ in 0..<3 {
            let port = try Loopback.freePort()
            do {
                let started = try Self.launch(port: port, directory: directory)
                self.port = port
                self.process = Mutex(started)
                return
            } catch { lastError = error }  // the port was taken between probe and bind: try another
        }
        throw lastError!
    }

    /// Starts a server, waiting for it off the cooperative pool.
    public static func start() async throws -> RedisServer {
        try await offPool { try RedisServer() }
    }

    /// Starts a new server on the same port after `crash()` or `stop()`.
    public func restart() async throws {
        try await offPool { [self] in try restartNow() }
    }

    private func restartNow() throws {
        let started = try Self.launch(port: port, directory: directory)
        let previous = process.withLock { current -> ManagedProcess? in
            defer { current = started }
            return current
        }
        previous?.stop()
    }

    /// SIGKILL: what clients see when the server host dies.
    public func crash() { process.withLock { $0?.crash() } }
    public func stop() { process.withLock { $0?.stop() } }
    public func pause() { process.withLock { $0?.suspend() } }
    public func resume() { process.withLock { $0?.signal(SIGCONT) } }

    private static func launch(port: Int, directory: String) throws -> ManagedProcess {
        let process = try ManagedProcess(
            name: "redis-server :\(port)", executable: try findExecutable("redis-server"),
            arguments: ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", directory, "--daemonize", "no"],
            logPath: "\(directory)/redis-\(port).log")
        try waitUntilReady(process, timeout: .seconds(10)) {
            Loopback.exchange(port: port, request: Array("PING\r\n".utf8)) { $0.count >= 7 }
                .map { $0 == Array("+PONG\r\n".utf8) } ?? false
        }
        return process
    }

    deinit { stop() }
}

/// A real Tansu broker (Kafka protocol, memory storage) on a free loopback port.
public final class TansuBroker: Sendable {
    public let port: Int
    public var bootstrap: String { "127.0.0.1:\(port)" }
    public let process: ManagedProcess

    /// The broker binary that `scripts/setup` installs; `SMARTHOST_TANSU` overrides it.
    public static var executable: String {
        ProcessInfo.processInfo.environment["SMARTHOST_TANSU"] ?? "\(repositoryRoot)/.tools/tansu/tansu"
    }

    public init() throws {
        let directory = try makeScratchDirectory("tansu")
        var lastError: Error?
        for _ in 0..<3 {
            let port = try Loopback.freePort()
            do {
                let url = "tcp://127.0.0.1:\(port)"
                let process = try ManagedProcess(
                    name: "tansu :\(port)", executable: Self.executable,
                    arguments: ["broker", "--listener-url", url, "--advertised-listener-url", url,
                                "--storage-engine", "memory://tansu/"],
                    logPath: "\(directory)/tansu-\(port).log")
                try waitUntilReady(process, timeout: .seconds(20)) { Self.answersApiVersions(port: port) }
                self.port = port
                self.process = process
                return
            } catch { lastError = error }
        }
        throw lastError!
    }

    /// Starts a broker, waiting for it off the cooperative pool.
    public static func start() async throws -> TansuBroker {
        try await offPool { try TansuBroker() }
    }

    /// SIGSTOP keeps the broker's memory-only data while it stops answering: an outage.
    public func pause() { process.suspend() }
    public func resume() { process.signal(SIGCONT) }
    public func stop() { process.stop() }

    /// Sends a Kafka ApiVersions v0 request and checks the correlation id of the answer.
    static func answersApiVersions(port: Int) -> Bool {
        let clientID = Array("probe".utf8)
        var body: [UInt8] = [0, 18, 0, 0, 0, 0, 0, 7]  // api key 18, version 0, correlation id 7
        body += [UInt8(clientID.count >> 8), UInt8(clientID.count & 0xff)] + clientID
        let size = UInt32(body.count)
        let request = [UInt8(size >> 24), UInt8((size >> 16) & 0xff), UInt8((size >> 8) & 0xff), UInt8(size & 0xff)] + body
        guard let answer = Loopback.exchange(port: port, request: request, isComplete: { bytes in
            guard bytes.count >= 4 else { return false }
            let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
            return bytes.count >= 4 + length
        }) else { return false }
        return answer.count >= 8 && Array(answer[4..<8]) == [0, 0, 0, 7]
    }

    deinit { stop() }
}

/// Finds a program on PATH or in the sbin folders Debian installs servers into.
public func findExecutable(_ name: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for dir in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"] {
        let candidate = "\(dir)/\(name)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    throw ServerStartError(server: name, reason: "\(name) is not installed (run scripts/setup)", log: "")
}

extension RedisServer {
    /// Calls per command since the server started, from INFO commandstats (commands a script
    /// runs inside Redis are counted as well, under their own names).
    public func commandCalls() async throws -> [String: Int] {
        var calls: [String: Int] = [:]
        for line in try await cli(["INFO", "commandstats"]).split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            let parts = line.dropFirst("cmdstat_".count).split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let field = parts[1].split(separator: ",").first, field.hasPrefix("calls="),
                  let count = Int(field.dropFirst("calls=".count)) else { continue }
            calls[String(parts[0])] = count
        }
        return calls
    }

    /// What `redis-cli` prints for one command against this server; a failure to run it is an error.
    public func cli(_ command: [String]) async throws -> String {
        let result = try await runCommand(try findExecutable("redis-cli"), ["-p", String(port)] + command)
        guard result.status == 0 else {
            throw ServerStartError(server: "redis-cli", reason: "\(command.joined(separator: " ")) failed with status \(result.status)", log: result.errors)
        }
        return result.output
    }

    /// Commands clients sent: script calls count once, and the commands scripts run inside
    /// Redis (all of them start with TIME or are listed here) are left out.
    public func clientCommands() async throws -> Int {
        let insideScripts: Set<String> = [
            "time", "get", "set", "incr", "incrby", "pexpire", "zremrangebyscore", "zcard", "zadd", "zscore", "zrem", "hset", "hdel",
            "zrangebyscore", "zrange", "hget",
        ]
        return try await commandCalls().filter { !insideScripts.contains($0.key) && $0.key != "info" }.values.reduce(0, +)
    }
}
