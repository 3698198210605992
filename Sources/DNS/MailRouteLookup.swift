import SMTPProtocol

/// Works out one domain's mail route from DNS answers (RFC 5321 §5.1, RFC 7505), uncached:
/// the MX records, then the A and AAAA records of every exchange at once.
struct MailRouteLookup: Sendable {
    /// A route and how long it may be kept.
    struct Resolution: Sendable, Equatable {
        var result: MailRoute.Result
        /// The smallest TTL of the answers it rests on, in seconds; nil when a lookup failed
        /// along the way, so that it is kept only briefly.
        var ttl: UInt32?
    }

    let lookup: @Sendable (String, DNSRecordType) async -> DNSAnswer

    /// `domain` lowercased, without a final dot.
    func resolve(_ domain: String) async -> Resolution {
        switch await lookup(domain, .mx) {
        case .records(let records, let ttl):
            return await resolveExchanges(records, of: domain, ttl: ttl)
        case .noData(let ttl):
            // No MX: the domain itself is the one host, the "implicit MX".
            return await resolveAddresses(of: [(domain, 0)], for: domain, ttl: ttl, implicitMX: true)
        case .nxdomain(let ttl):
            return Resolution(result: .failed(SMTPReply(550, EnhancedStatusCode(5, 1, 2), "\(domain): no such domain (DNS NXDOMAIN)")), ttl: ttl)
        case .invalidName(let problem):
            return Resolution(result: .failed(SMTPReply(553, EnhancedStatusCode(5, 1, 3), problem)), ttl: .max)
        case let failure:
            return Self.lookupFailed("MX records of \(domain)", failure)
        }
    }

    private func resolveExchanges(_ records: [DNSRecord], of domain: String, ttl: UInt32) async -> Resolution {
        let exchanges = records.compactMap { record -> (name: String, preference: Int)? in
            guard case .mx(let preference, let exchange) = record else { return nil }
            return (exchange, Int(preference))
        }
        // The root exchange names no host. Alone it is a null MX; beside real hosts (which RFC
        // 7505 forbids) it is ignored and the hosts are used.
        let hosts = exchanges.filter { $0.name != "." }
        guard !hosts.isEmpty else {
            return Resolution(result: .failed(SMTPReply(556, EnhancedStatusCode(5, 1, 10), "\(domain) does not accept mail (null MX, RFC 7505)")),
                              ttl: ttl)
        }
        // An exchange must be a host name (RFC 5321 §5.1); an IP address there is skipped, as
        // Exim does by default, rather than connected to.
        let named = hosts.filter { !IPAddress.isIPv4($0.name) }
        guard !named.isEmpty else {
            let listed = hosts.map(\.name).joined(separator: ", ")
            return Resolution(result: .failed(SMTPReply(550, EnhancedStatusCode(5, 4, 4),
                                                        "the MX records of \(domain) name IP addresses (\(listed)), not hosts")), ttl: ttl)
        }
        var seen: Set<String> = []
        let ordered = named.sorted { ($0.preference, $0.name) < ($1.preference, $1.name) }
            .filter { seen.insert($0.name).inserted }
            .prefix(MailRouteResolver.hostLimit)
        return await resolveAddresses(of: Array(ordered), for: domain, ttl: ttl, implicitMX: false)
    }

    /// Hosts without an address are left out. When none has one, a failed lookup makes it a
    /// transient failure (Postfix's "Host not found, try again"); otherwise DNS says there is
    /// nowhere to deliver, a permanent one.
    private func resolveAddresses(of hosts: [(name: String, preference: Int)], for domain: String, ttl mxTTL: UInt32,
                                  implicitMX: Bool) async -> Resolution {
        let lookup = self.lookup
        let answers = await withTaskGroup(of: (host: Int, type: DNSRecordType, answer: DNSAnswer).self) { group in
            for (index, host) in hosts.enumerated() {
                for type in [DNSRecordType.a, .aaaa] {
                    group.addTask { (index, type, await lookup(host.name, type)) }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        var ipv4 = Array(repeating: [String](), count: hosts.count)
        var ipv6 = ipv4
        var ttl = mxTTL
        var failure: Resolution?
        for (host, type, answer) in answers {
            switch answer {
            case .records(let records, let recordTTL):
                ttl = min(ttl, recordTTL)
                for record in records {
                    switch record {
                    case .a(let address): ipv4[host].append(address)
                    case .aaaa(let address): ipv6[host].append(address)
                    case .mx: break
                    }
                }
            case .noData(let negativeTTL), .nxdomain(let negativeTTL):
                ttl = min(ttl, negativeTTL)
            case .invalidName:
                break  // the record decoder accepts no name that this refuses
            case .serverFailure, .timeout, .failed:
                failure = failure ?? Self.lookupFailed("\(type) records of \(hosts[host].name)", answer)
            }
        }
        let resolved = hosts.indices.compactMap { index -> MailHost? in
            let addresses = ipv4[index] + ipv6[index]
            guard !addresses.isEmpty else { return nil }
            return MailHost(name: hosts[index].name, preference: hosts[index].preference, addresses: addresses)
        }
        guard !resolved.isEmpty else {
            if let failure { return failure }
            let reply = implicitMX
                ? SMTPReply(550, EnhancedStatusCode(5, 1, 2), "\(domain) has no MX and no A or AAAA record")
                : SMTPReply(550, EnhancedStatusCode(5, 4, 4),
                            "the MX hosts of \(domain) (\(hosts.map(\.name).joined(separator: ", "))) have no A or AAAA record")
            return Resolution(result: .failed(reply), ttl: ttl)
        }
        let site = resolved.map(\.name).joined(separator: ",")
        return Resolution(result: .hosts(site: site, resolved), ttl: failure == nil ? ttl : nil)
    }

    /// A 4.4.3 for a lookup that did not get an answer from DNS.
    private static func lookupFailed(_ what: String, _ answer: DNSAnswer) -> Resolution {
        let outcome = switch answer {
        case .serverFailure(let rcode): "failed: \(rcodeName(rcode))"
        case .timeout: "timed out"
        case .invalidName(let problem), .failed(let problem): "failed: \(problem)"
        case .records, .noData, .nxdomain: "failed"
        }
        return Resolution(result: .failed(SMTPReply(451, EnhancedStatusCode(4, 4, 3), "DNS lookup of the \(what) \(outcome)")), ttl: nil)
    }

    private static func rcodeName(_ rcode: Int32) -> String {
        switch rcode {
        case 1: "FORMERR"
        case 2: "SERVFAIL"
        case 4: "NOTIMP"
        case 5: "REFUSED"
        default: "rcode \(rcode)"
        }
    }
}
