/// One argument of a command, as the bytes sent to the server (binary-safe).
///
/// String literals (interpolated too) and integer literals work directly:
/// `client.send(["INCRBY", "counter-\(id)", 5])`.
public struct RedisArgument: Sendable, Hashable, ExpressibleByStringInterpolation, ExpressibleByIntegerLiteral {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public init(_ value: some BinaryInteger) { self.bytes = Array(String(value).utf8) }
    public init(stringLiteral value: String) { self.init(value) }
    public init(integerLiteral value: Int) { self.init(value) }

    /// The upper-cased argument as a label for metrics and error messages (the command name
    /// when this is the first argument), cut at 32 bytes; never a key or value.
    var label: String {
        let name = String(decoding: bytes.prefix(32), as: UTF8.self).uppercased()
        return name.isEmpty ? "(empty)" : name
    }
}
