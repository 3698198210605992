import Crypto
#if canImport(Glibc)
import Glibc
#endif

/// A message's identity across the cluster: 48 bits of milliseconds since the epoch and 80
/// random bits, written as 26 characters of Crockford base32 (the ULID layout). Ids sort by
/// the time they were made, and two ingress nodes cannot realistically make the same one.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let text: String

    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// A new id for a message accepted now.
    public static func generate(milliseconds: UInt64 = currentMilliseconds()) -> MessageID {
        var random = SystemRandomNumberGenerator()
        let high = UInt128(milliseconds & 0xFFFF_FFFF_FFFF) << 80
        let low = UInt128(random.next() as UInt64) << 16 | UInt128(random.next() as UInt16)
        return make(high | low)
    }

    /// The id of a message this node makes about another one (a delivery status notification):
    /// the original's time and 80 bits of SHA-256 of the original id and `purpose`, so that
    /// making it twice (after a crash, or a second attempt that bounces the same recipients)
    /// gives the same id, which the spool keeps only once.
    public static func derived(from original: MessageID, purpose: String) -> MessageID {
        let digest = Array(SHA256.hash(data: Array((original.text + "\u{0}" + purpose).utf8)))
        let random = digest.prefix(10).reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
        return make(UInt128(original.milliseconds & 0xFFFF_FFFF_FFFF) << 80 | random)
    }

    private static func make(_ value: UInt128) -> MessageID {
        var value = value
        var characters = [UInt8](repeating: 0, count: 26)
        for index in stride(from: 25, through: 0, by: -1) {
            characters[index] = alphabet[Int(value & 31)]
            value >>= 5
        }
        return MessageID(text: String(decoding: characters, as: UTF8.self))
    }

    private init(text: String) {
        self.text = text
    }

    /// Accepts exactly the form `generate` makes: 26 characters of the upper-case alphabet, the
    /// first at most 7 (128 bits).
    public init?(parsing text: some StringProtocol) {
        let bytes = Array(text.utf8)
        guard bytes.count == 26, bytes.allSatisfy(Self.alphabet.contains), bytes[0] <= UInt8(ascii: "7") else { return nil }
        self.text = String(text)
    }

    /// When the id was made, in milliseconds since the epoch.
    public var milliseconds: UInt64 {
        var value: UInt64 = 0
        for byte in text.utf8.prefix(10) {
            value = value << 5 | UInt64(Self.alphabet.firstIndex(of: byte)!)
        }
        return value
    }

    public static func < (a: MessageID, b: MessageID) -> Bool { a.text < b.text }
    public var description: String { text }

    public static func currentMilliseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000
    }
}
