/// One RESP2 reply, as decoded by hiredis.
///
/// Replies come from outside the process, so the accessors never trap: a reply of the wrong
/// kind throws `RedisError.unexpectedReply`, and an error reply throws `RedisError.server`.
public enum RedisValue: Sendable, Hashable, CustomStringConvertible {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string: arbitrary bytes, CR and LF included.
    case bulkString([UInt8])
    /// A null bulk string or null array (`$-1`, `*-1`).
    case null
    case array([RedisValue])

    public var isNull: Bool { self == .null }

    /// An integer reply, or a simple or bulk string holding a decimal 64-bit integer (as `GET`
    /// returns what `INCR` stored).
    public func int() throws(RedisError) -> Int64 {
        switch self {
        case .integer(let value):
            return value
        case .simpleString(let text):
            if let value = Int64(text) { return value }
        case .bulkString(let bytes):
            if let text = String(validating: bytes, as: UTF8.self), let value = Int64(text) { return value }
        case .error(let message):
            throw .server(message)
        case .null, .array:
            break
        }
        throw .unexpectedReply(expected: "an integer", got: description)
    }

    /// A simple string, or a bulk string that is valid UTF-8.
    public func string() throws(RedisError) -> String {
        switch self {
        case .simpleString(let text):
            return text
        case .bulkString(let bytes):
            if let text = String(validating: bytes, as: UTF8.self) { return text }
        case .error(let message):
            throw .server(message)
        case .integer, .null, .array:
            break
        }
        throw .unexpectedReply(expected: "a UTF-8 string", got: description)
    }

    /// The bytes of a bulk or simple string.
    public func bytes() throws(RedisError) -> [UInt8] {
        switch self {
        case .bulkString(let bytes):
            return bytes
        case .simpleString(let text):
            return Array(text.utf8)
        case .error(let message):
            throw .server(message)
        case .integer, .null, .array:
            throw .unexpectedReply(expected: "a string", got: description)
        }
    }

    /// The elements of an array reply.
    public func array() throws(RedisError) -> [RedisValue] {
        switch self {
        case .array(let elements):
            return elements
        case .error(let message):
            throw .server(message)
        case .simpleString, .integer, .bulkString, .null:
            throw .unexpectedReply(expected: "an array", got: description)
        }
    }

    /// A short description for error messages: text is cut at 64 characters, so a huge or
    /// hostile reply never floods a log line.
    public var description: String {
        switch self {
        case .simpleString(let text):
            "simple string \(Self.quoted(text))"
        case .error(let message):
            "error reply \(Self.quoted(message))"
        case .integer(let value):
            "integer \(value)"
        case .bulkString(let bytes):
            if let text = String(validating: bytes, as: UTF8.self) {
                "bulk string \(Self.quoted(text))"
            } else {
                "binary bulk string of \(bytes.count) bytes"
            }
        case .null:
            "null"
        case .array(let elements):
            "array of \(elements.count) elements"
        }
    }

    private static func quoted(_ text: String) -> String {
        let limit = 64
        guard text.count > limit else { return text.debugDescription }
        return String(text.prefix(limit)).debugDescription + "…"
    }
}
