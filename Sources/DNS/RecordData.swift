#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Decoding of the rdata libunbound hands back: RFC 1035 wire format, uncompressed. Strict:
/// anything that is not exactly one well-formed record is nil (the resolver leaves it out), so a
/// hostile answer cannot smuggle a name we would not accept from a configuration file.
enum RecordData {
    static func record(_ type: DNSRecordType, _ rdata: UnsafeRawBufferPointer) -> DNSRecord? {
        switch type {
        case .mx: mx(rdata).map { .mx(preference: $0.preference, exchange: $0.exchange) }
        case .a: ipv4(rdata).map(DNSRecord.a)
        case .aaaa: ipv6(rdata).map(DNSRecord.aaaa)
        }
    }

    /// An MX record (RFC 1035 §3.3.9): a 16-bit preference, then the exchange, lowercased and
    /// without the final dot; the root name (a null MX, RFC 7505) is ".".
    static func mx(_ rdata: UnsafeRawBufferPointer) -> (preference: UInt16, exchange: String)? {
        guard rdata.count >= 3 else { return nil }
        let preference = UInt16(rdata[0]) << 8 | UInt16(rdata[1])
        guard let exchange = domainName(UnsafeRawBufferPointer(rebasing: rdata[2...])) else { return nil }
        return (preference, exchange)
    }

    /// A whole buffer holding one uncompressed domain name: labels of 1 to 63 letters, digits,
    /// hyphens or underscores, at most 255 bytes in all, and nothing after the root label.
    static func domainName(_ bytes: UnsafeRawBufferPointer) -> String? {
        var labels: [String] = []
        var index = 0
        while index < bytes.count {
            let length = Int(bytes[index])
            // The root label ends the name, and the name must end the rdata.
            if length == 0 {
                guard index + 1 == bytes.count, index + 1 <= 255 else { return nil }
                return labels.isEmpty ? "." : labels.joined(separator: ".")
            }
            // 64 and above: the two top bits set mean a compression pointer (0xC0) or a reserved
            // label type, which uncompressed rdata never holds.
            guard length <= 63 else { return nil }
            let label = index + 1..<index + 1 + length
            guard label.upperBound < bytes.count,
                  bytes[label].allSatisfy(isHostNameByte) else { return nil }
            labels.append(String(decoding: bytes[label], as: UTF8.self).lowercased())
            index = label.upperBound
        }
        return nil  // no root label
    }

    static func isHostNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"): true
        default: false
        }
    }

    static func ipv4(_ rdata: UnsafeRawBufferPointer) -> String? {
        guard rdata.count == 4 else { return nil }
        return rdata.map(String.init).joined(separator: ".")
    }

    /// RFC 5952 text (what `inet_ntop` writes).
    static func ipv6(_ rdata: UnsafeRawBufferPointer) -> String? {
        guard rdata.count == 16 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, rdata.baseAddress, &text, socklen_t(text.count)) != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
