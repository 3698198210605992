import Crypto

/// A Lua script and its SHA-1, computed locally: the same lowercase hex digest that
/// SCRIPT LOAD returns and EVALSHA expects.
public struct RedisScript: Sendable, Hashable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        let hexDigits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for byte in Insecure.SHA1.hash(data: Array(source.utf8)) {
            hex.append(hexDigits[Int(byte >> 4)])
            hex.append(hexDigits[Int(byte & 0x0f)])
        }
        sha1 = String(decoding: hex, as: UTF8.self)
    }
}
