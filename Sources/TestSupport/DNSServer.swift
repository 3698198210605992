import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real DNS server (dnsmasq) on 127.0.0.1 and a free port, the only source of the zones of
/// its records: a name in a zone that it was not given is NXDOMAIN, as in a real zone (but
/// without an SOA: dnsmasq's authoritative mode would add one, and then refuse to forward the
/// unanswered zones). Names in no zone are REFUSED (dnsmasq has no upstream), which libunbound
/// reports as SERVFAIL; names in an unanswered zone get no answer at all, as from a dead server.
public final class DNSServer: Sendable {
    public struct Records: Sendable {
        /// MX records: domain, exchange, preference.
        public var mx: [(domain: String, exchange: String, preference: Int)] = []
        /// A records: name, IPv4 address (one entry per address).
        public var a: [(name: String, address: String)] = []
        /// AAAA records: name, IPv6 address (one entry per address).
        public var aaaa: [(name: String, address: String)] = []
        /// CNAME records: alias, target (a name these records give).
        public var cname: [(alias: String, target: String)] = []
        /// TXT records: name, text (also a way to make a name exist without other records).
        public var txt: [(name: String, text: String)] = []
        /// Domains with a null MX (RFC 7505: `MX 0 .`).
        public var nullMX: [String] = []
        /// Zones answered from these records only (`test` by default).
        public var zones: [String] = ["test"]
        /// Zones forwarded to a UDP port that never answers.
        public var unansweredZones: [String] = []
        /// The TTL of every record, in seconds.
        public var ttl = 30

        public init() {}

        /// dnsmasq's options for these records, listening on 127.0.0.1:`port`; unanswered zones
        /// forward to 127.0.0.1:`silentPort`. Everything but the command's start-up flags, for a
        /// script that runs dnsmasq itself.
        public func dnsmasqArguments(port: Int, silentPort: Int?) -> [String] {
            var arguments = ["--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                             "--conf-file=/dev/null", "--local-ttl=\(ttl)"]
            arguments += zones.map { "--local=/\($0)/" }
            arguments += mx.map { "--mx-host=\($0.domain),\($0.exchange),\($0.preference)" }
            arguments += (a + aaaa).map { "--host-record=\($0.name),\($0.address)" }
            arguments += cname.map { "--cname=\($0.alias),\($0.target)" }
            arguments += txt.map { "--txt-record=\($0.name),\($0.text)" }
            // Preference 0 and the root name: rdata 00 00 00.
            arguments += nullMX.map { "--dns-rr=\($0),15,000000" }
            if let silentPort {
                arguments += unansweredZones.map { "--server=/\($0)/127.0.0.1#\(silentPort)" }
            }
            return arguments
        }
    }

    public let port: Int
    public let process: ManagedProcess
    /// Where unanswered zones are forwarded, held for the server's life.
    private let silent: SilentUDPPort?
    /// `127.0.0.1:port`, as `dns.resolvers` and `DNSResolver` take it.
    public var address: String { "127.0.0.1:\(port)" }

    /// Starts dnsmasq and waits until it answers a query; throws `ServerStartError` with its log
    /// when it does not. A given `port` is used as is; without one, a free port is found (and
    /// another tried if it was taken meanwhile).
    public static func start(_ records: Records, port: Int? = nil) async throws -> DNSServer {
        try await offPool {
            let silent = try records.unansweredZones.isEmpty ? nil : SilentUDPPort()
            var lastError: Error?
            for _ in 0..<(port == nil ? 3 : 1) {
                do {
                    let chosen = try port ?? Loopback.freePort()
                    return DNSServer(port: chosen, process: try launch(records, port: chosen, silent: silent), silent: silent)
                } catch {
                    lastError = error
                }
            }
            throw lastError!
        }
    }

    private static func launch(_ records: Records, port: Int, silent: SilentUDPPort?) throws -> ManagedProcess {
        let directory = try makeScratchDirectory("dnsmasq")
        // In the foreground, logging every query to the log file; as root, stay root instead of
        // switching to a user that may not exist.
        let startup = ["--keep-in-foreground", "--pid-file=", "--log-facility=-", "--log-queries"]
            + (getuid() == 0 ? ["--user=root"] : [])
        let process = try ManagedProcess(name: "dnsmasq :\(port)", executable: try findExecutable("dnsmasq"),
                                         arguments: startup + records.dnsmasqArguments(port: port, silentPort: silent?.port),
                                         logPath: "\(directory)/dnsmasq.log")
        try waitUntilReady(process, timeout: .seconds(10)) { answersQueries(port: port) }
        return process
    }

    private init(port: Int, process: ManagedProcess, silent: SilentUDPPort?) {
        self.port = port
        self.process = process
        self.silent = silent
    }

    /// The questions the server was asked, as its log records them: `MX pref.test`, `A mx.pref.test`.
    public func queries() -> [String] {
        let log = (try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").compactMap { line in
            // "dnsmasq[42]: query[MX] pref.test from 127.0.0.1"
            guard let open = line.range(of: "query["),
                  let close = line[open.upperBound...].firstIndex(of: "]") else { return nil }
            let name = line[line.index(after: close)...].split(separator: " ").first ?? ""
            return "\(line[open.upperBound..<close]) \(name)"
        }
    }

    public func stop() {
        process.stop()
        silent?.close()
    }

    deinit { stop() }

    /// Sends one query (SOA of the root) and waits briefly for any reply.
    private static func answersQueries(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var wait = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var server = sockaddr_in.loopback(port: port)
        // ID 0x5353, recursion desired, one question: ". SOA IN".
        let query: [UInt8] = [0x53, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1]
        let sent = withUnsafePointer(to: &server) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, query, query.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard sent == query.count else { return false }
        var reply = [UInt8](repeating: 0, count: 512)
        let received = recv(fd, &reply, reply.count, 0)
        return received >= 12 && reply[0] == 0x53 && reply[1] == 0x53
    }
}

/// A UDP port on 127.0.0.1 that receives and never answers: a resolver that times out.
public final class SilentUDPPort: Sendable {
    public let port: Int
    private let descriptor: Mutex<Int32?>

    /// Binds `port`, or a free one.
    public init(port: Int? = nil) throws {
        // Close-on-exec: a server a test starts later must not inherit the port and hold it.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in.loopback(port: port ?? 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else {
            _ = Glibc.close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        descriptor = Mutex(fd)
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// `127.0.0.1:port`.
    public var address: String { "127.0.0.1:\(port)" }

    /// Frees the port (a real server may take it then).
    public func close() {
        if let fd = descriptor.withLock({ $0.take() }) { _ = Glibc.close(fd) }
    }

    deinit { close() }
}

private extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }
}
