@testable import DNS
import Testing

@Suite struct RecordDataTests {
    func mx(_ rdata: [UInt8]) -> (preference: UInt16, exchange: String)? {
        rdata.withUnsafeBytes { RecordData.mx($0) }
    }

    func label(_ length: Int) -> [UInt8] { [UInt8(length)] + Array(repeating: UInt8(ascii: "a"), count: length) }

    @Test func wellFormedMXRecords() throws {
        let record = try #require(mx(mxRdata(10, "MX-1.Example.test")))
        #expect(record.preference == 10 && record.exchange == "mx-1.example.test")
        #expect(mx([0x01, 0x00, 0]).map { "\($0.preference) \($0.exchange)" } == "256 .", "a null MX's root name")
        // 63 + 63 + 63 + 61 octets: a name of exactly 255 bytes on the wire.
        let longest = [0, 1] + label(63) + label(63) + label(63) + label(61) + [0]
        #expect(mx(longest)?.exchange.count == 253)
    }

    @Test(arguments: [
        ("empty", []), ("only a preference byte", [0]), ("no exchange", [0, 10]),
        ("compression pointer", [0, 10, 0xC0, 0x0C]), ("pointer after a label", [0, 10, 1, 97, 0xC0, 0x0C]),
        ("reserved label type 0x40", [0, 10, 0x40, 97, 0]), ("reserved label type 0x80", [0, 10, 0x80, 97, 0]),
        ("label past the end", [0, 10, 5, 97, 98, 0]), ("no root label", [0, 10, 3, 97, 98, 99]),
        ("bytes after the root", [0, 10, 1, 97, 0, 0]), ("bytes after a null MX", [0, 0, 0, 0]),
        ("a dot inside a label", [0, 10, 3, 97, 46, 98, 0]), ("a space", [0, 10, 3, 97, 32, 98, 0]),
        ("a NUL byte", [0, 10, 3, 97, 0, 98, 0]), ("a non-ASCII byte", [0, 10, 2, 0xC3, 0xA9, 0]),
    ] as [(String, [UInt8])])
    func malformedMXRecordsAreRefused(_ what: String, _ rdata: [UInt8]) {
        #expect(mx(rdata) == nil, "\(what)")
    }

    @Test func labelsAndNamesOverTheLimitsAreRefused() {
        #expect(mx([0, 10] + label(64) + [0]) == nil, "a 64-byte label")
        #expect(mx([0, 10] + label(63) + [0]) != nil)
        let over255 = [0, 1] + label(63) + label(63) + label(63) + label(62) + [0]
        #expect(mx(over255) == nil, "256 bytes on the wire")
        let huge: [UInt8] = [0, 1] + Array(repeating: label(63), count: 1_000).joined() + [0]
        #expect(mx(huge) == nil)
    }

    @Test func addresses() {
        func ipv4(_ bytes: [UInt8]) -> String? { bytes.withUnsafeBytes { RecordData.ipv4($0) } }
        func ipv6(_ bytes: [UInt8]) -> String? { bytes.withUnsafeBytes { RecordData.ipv6($0) } }
        #expect(ipv4([192, 0, 2, 1]) == "192.0.2.1")
        #expect(ipv4([]) == nil && ipv4([1, 2, 3]) == nil && ipv4([1, 2, 3, 4, 5]) == nil)
        #expect(ipv6([UInt8](repeating: 0, count: 15) + [1]) == "::1")
        #expect(ipv6([0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [9]) == "2001:db8::9")
        #expect(ipv6([UInt8](repeating: 0, count: 15)) == nil && ipv6([UInt8](repeating: 0, count: 17)) == nil)
    }

    @Test func domainNameSyntax() {
        #expect(DomainNameSyntax.problem("mail.example.test") == nil)
        #expect(DomainNameSyntax.problem("mail.example.test.") == nil)
        #expect(DomainNameSyntax.problem("xn--bcher-kva.test") == nil)
        #expect(DomainNameSyntax.problem(String(repeating: "a.", count: 126) + "a") == nil, "253 characters")
        for bad in ["", ".", "a..b", ".a", "exa mple.test", "bücher.test", "a\u{0}.test", "semi;colon.test",
                    String(repeating: "a", count: 64) + ".test", String(repeating: "a.", count: 127) + "a"] {
            #expect(DomainNameSyntax.problem(bad) != nil, "\(bad.prefix(20).debugDescription)")
        }
    }

    @Test func forwardersInLibunboundForm() throws {
        #expect(try DNSResolver.unboundForwarder("127.0.0.1:5353") == "127.0.0.1@5353")
        #expect(try DNSResolver.unboundForwarder("[::1]:53") == "::1@53")
        #expect(try DNSResolver.unboundForwarder("[2001:db8::53]:65535") == "2001:db8::53@65535")
    }
}
