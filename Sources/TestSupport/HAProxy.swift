import Foundation

/// A real HAProxy in TCP mode on a free loopback port, balancing round-robin over `backends`
/// (ports on 127.0.0.1) and sending each a PROXY protocol v2 header.
public struct HAProxy: Sendable {
    public let process: ManagedProcess
    public let port: Int

    public static func start(backends: [Int]) throws -> HAProxy {
        let port = try Loopback.freePort()
        let directory = NSTemporaryDirectory() + "haproxy-\(port)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let servers = backends.enumerated().map { "    server b\($0.offset) 127.0.0.1:\($0.element) send-proxy-v2" }
        try """
            global
                maxconn 4096
            defaults
                mode tcp
                timeout connect 5s
                timeout client 60s
                timeout server 60s
            frontend smtp
                bind 127.0.0.1:\(port)
                default_backend ingress
            backend ingress
                balance roundrobin
            \(servers.joined(separator: "\n"))

            """.write(toFile: "\(directory)/haproxy.cfg", atomically: true, encoding: .utf8)
        let process = try ManagedProcess(name: "haproxy", executable: try findExecutable("haproxy"),
                                         arguments: ["-db", "-f", "\(directory)/haproxy.cfg"], logPath: "\(directory)/haproxy.log")
        return HAProxy(process: process, port: port)
    }

    public func stop() { process.stop() }
}
