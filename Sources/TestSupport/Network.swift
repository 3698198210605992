import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Loopback helpers for test servers: free ports and a blocking request/answer probe.
public enum Loopback {
    /// A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Connects to 127.0.0.1:port, writes `request` and reads until `isComplete` says the
    /// answer is whole, or `timeout` passes. Returns nil when nothing answers.
    public static func exchange(port: Int, request: [UInt8], timeout: Duration = .seconds(1),
                                isComplete: ([UInt8]) -> Bool) -> [UInt8]? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1000 }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !isComplete(answer) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            answer.append(contentsOf: chunk[0..<n])
        }
        return answer
    }
}

/// Polls `probe` until it answers true, the process dies, or `timeout` passes; the last two
/// throw a `ServerStartError` carrying the server's log.
func waitUntilReady(_ process: ManagedProcess, timeout: Duration, probe: () -> Bool) throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        guard process.isRunning else {
            throw ServerStartError(server: process.name, reason: "it exited during start-up", log: process.logTail())
        }
        if probe() { return }
        usleep(50_000)
    }
    let log = process.logTail()
    process.stop()
    throw ServerStartError(server: process.name, reason: "it did not answer within \(timeout)", log: log)
}

/// A fresh temporary folder for one server's log and data.
func makeScratchDirectory(_ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "smarthost-\(name)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Waits until `process` answers on `port` with a line starting with `greeting` (for example
/// an SMTP server's "220"); fails with its log if it exits or stays silent.
public func waitForGreeting(_ process: ManagedProcess, port: Int, greeting: String, timeout: Duration = .seconds(30)) async throws {
    try await offPool {
        try waitUntilReady(process, timeout: timeout) {
            Loopback.exchange(port: port, request: [], isComplete: { $0.contains(10) })
                .map { String(decoding: $0, as: UTF8.self).hasPrefix(greeting) } ?? false
        }
    }
}

extension Loopback {
    /// A plain HTTP/1.1 GET on 127.0.0.1:port; the whole answer (status line, headers, body)
    /// once Content-Length bytes of body arrived, or nil.
    public static func httpGet(port: Int, path: String, timeout: Duration = .seconds(3)) -> String? {
        exchange(port: port, request: Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8), timeout: timeout) {
            let text = String(decoding: $0, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n"),
                  let lengthLine = text[..<split.lowerBound].split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
                  let length = Int(lengthLine.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else { return false }
            return text[split.upperBound...].utf8.count >= length
        }.map { String(decoding: $0, as: UTF8.self) }
    }
}
