import Dispatch
import Foundation
import Synchronization

public enum DNSRecordType: UInt16, Sendable, CustomStringConvertible {
    case a = 1
    case mx = 15
    case aaaa = 28

    public var description: String {
        switch self {
        case .a: "A"
        case .mx: "MX"
        case .aaaa: "AAAA"
        }
    }
}

/// One decoded record of an answer.
public enum DNSRecord: Sendable, Hashable {
    /// The exchange is lowercased, without the final dot; the root (a null MX) is ".".
    case mx(preference: UInt16, exchange: String)
    /// Dotted-quad text.
    case a(String)
    /// RFC 5952 text.
    case aaaa(String)
}

/// What a lookup found. TTLs are in seconds, as libunbound gives them: the records' remaining
/// TTL, or for a negative answer the zone's negative-caching TTL (RFC 2308).
public enum DNSAnswer: Sendable, Equatable {
    /// The records, in the order libunbound gave them (CNAMEs already followed). Records whose
    /// rdata is malformed are left out; when none is left the answer is `.failed`.
    case records([DNSRecord], ttl: UInt32)
    /// NOERROR without a record of the type: the name exists.
    case noData(ttl: UInt32)
    case nxdomain(ttl: UInt32)
    /// SERVFAIL, REFUSED or another error rcode (libunbound turns a forwarder's REFUSED into
    /// SERVFAIL after trying the others).
    case serverFailure(rcode: Int32)
    /// No answer within the resolver's timeout.
    case timeout
    /// Not a name DNS can hold; nothing was asked.
    case invalidName(String)
    /// A local failure: the resolver is shut down, or libunbound refused the query.
    case failed(String)
}

public struct DNSResolverError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Asks recursive resolvers through libunbound, which does the protocol, the retries and a
/// TTL-honouring cache. One thread of its own creates the `ub_ctx`, makes every libunbound call
/// and deletes it: callers hand it queries through a locked inbox and a wake-up pipe, and it
/// answers them from libunbound's callbacks, or with `.timeout` at their deadline.
public final class DNSResolver: Sendable {
    /// Held by the DNS thread too, until it ends.
    let inbox: ResolverInbox
    /// Left when the DNS thread has deleted the context and ended.
    private let threadRunning: DispatchGroup

    /// `forwarders` as `address:port` (`[address]:port` for IPv6), among which libunbound picks
    /// by response time; empty uses the nameservers of /etc/resolv.conf. A query unanswered after `timeout` is
    /// answered `.timeout`.
    public init(forwarders: [String], timeout: Duration) throws {
        let unboundForwarders = try forwarders.map(Self.unboundForwarder)
        let inbox = try ResolverInbox()
        let threadRunning = DispatchGroup()
        let startup = StartupReport()
        threadRunning.enter()
        let thread = Thread {
            defer { threadRunning.leave() }
            ResolverThread.run(forwarders: unboundForwarders, timeout: timeout, inbox: inbox, startup: startup)
        }
        thread.name = "smarthost-dns"
        thread.start()
        if let error = startup.wait() { throw error }
        self.inbox = inbox
        self.threadRunning = threadRunning
    }

    /// libunbound's `address@port` for `address:port` or `[address]:port`. Only IP addresses:
    /// libunbound forwards to addresses, and resolving a resolver's name would need a resolver.
    static func unboundForwarder(_ forwarder: String) throws -> String {
        let invalid = DNSResolverError(description:
            "resolver \(forwarder.prefix(100).debugDescription): expected an IP address and a port, such as 192.0.2.53:53 or [2001:db8::53]:53")
        let address: Substring, port: Substring
        if forwarder.hasPrefix("[") {
            guard let close = forwarder.firstIndex(of: "]"), forwarder[close...].hasPrefix("]:") else { throw invalid }
            address = forwarder[forwarder.index(after: forwarder.startIndex)..<close]
            port = forwarder[forwarder.index(close, offsetBy: 2)...]
            guard IPAddress.isIPv6(address) else { throw invalid }
        } else {
            guard let colon = forwarder.firstIndex(of: ":") else { throw invalid }
            address = forwarder[..<colon]
            port = forwarder[forwarder.index(after: colon)...]
            guard IPAddress.isIPv4(address) else { throw invalid }
        }
        // Int() alone would take "+53".
        guard port.allSatisfy(\.isASCIIDigit), let number = Int(port), (1...65_535).contains(number) else { throw invalid }
        return "\(address)@\(number)"
    }

    /// Looks `name` up. Answers within the resolver's timeout, with `.failed` once it is shut down.
    public func lookup(_ name: String, _ type: DNSRecordType) async -> DNSAnswer {
        if let problem = DomainNameSyntax.problem(name) { return .invalidName(problem) }
        return await withCheckedContinuation { continuation in
            let query = PendingQuery(name: name, type: type, continuation: continuation)
            if !inbox.submit(query) { query.answer(.failed(ResolverThread.shutDownMessage)) }
        }
    }

    /// Stops the DNS thread: queries still waiting are answered `.failed`, the context is deleted.
    /// Returns once that is done (a few milliseconds); calling it again returns at once.
    public func shutdown() {
        inbox.stop()
        threadRunning.wait()
    }

    /// Without `shutdown()`, the thread still stops (on its own time) when the resolver goes away.
    deinit {
        inbox.stop()
    }
}

/// The DNS thread's word on its start (the context configured, or why not), awaited by
/// `DNSResolver.init`.
final class StartupReport: Sendable {
    private let reported = DispatchSemaphore(value: 0)
    private let error = Mutex<DNSResolverError?>(nil)

    func report(_ failure: DNSResolverError?) {
        error.withLock { $0 = failure }
        reported.signal()
    }

    func wait() -> DNSResolverError? {
        reported.wait()
        return error.withLock { $0 }
    }
}

/// Names as a mail domain or an MX host can be: what is refused here would only get a syntax
/// error from libunbound, or match nothing.
enum DomainNameSyntax {
    /// Why `name` is not a domain name, or nil when it is one.
    static func problem(_ name: String) -> String? {
        let shown = name.prefix(100).debugDescription
        let withoutRoot = name.hasSuffix(".") ? name.dropLast() : Substring(name)
        guard withoutRoot.utf8.count <= 253 else { return "\(shown) is not a domain name: longer than 253 characters" }
        let labels = withoutRoot.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.allSatisfy({ !$0.isEmpty }) else { return "\(shown) is not a domain name: an empty label" }
        guard labels.allSatisfy({ $0.utf8.count <= 63 }) else { return "\(shown) is not a domain name: a label longer than 63 characters" }
        guard labels.allSatisfy({ $0.utf8.allSatisfy(RecordData.isHostNameByte) }) else {
            return "\(shown) is not a domain name: only letters, digits, hyphens and underscores (A-labels for IDNs)"
        }
        return nil
    }
}

enum IPAddress {
    static func isIPv4(_ text: some StringProtocol) -> Bool { parses(text, family: AF_INET) }
    static func isIPv6(_ text: some StringProtocol) -> Bool { parses(text, family: AF_INET6) }

    private static func parses(_ text: some StringProtocol, family: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(family, String(text), &buffer) == 1
    }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
