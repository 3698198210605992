import CHiredis
import NIOCore

// The only file that touches hiredis: it encodes commands and parses replies, nothing else.
// Sockets, buffering of writes, timeouts and reconnects are NIO's and this module's business.

/// Encodes commands with `redisFormatCommandArgv`.
enum HiredisEncoder {
    /// Appends the RESP encoding of one command to `buffer`.
    static func encode(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) throws(RedisError) {
        guard !arguments.isEmpty else {
            // "*0\r\n" gets no reply from Redis, which would leave a caller waiting for nothing.
            throw .invalidCommand("a command needs at least one argument")
        }
        // hiredis returns the encoded length as an `int`: refuse anything that could overflow
        // it. Per argument at most "$" + 20 digits + 2 CRLF = 25 bytes of framing, same for "*".
        let payload = arguments.reduce(0) { $0 + $1.bytes.count }
        guard payload + 25 * (arguments.count + 1) <= Int(Int32.max) else {
            throw .invalidCommand("\(arguments.count) arguments of \(payload) bytes exceed what one RESP command can carry")
        }

        // One contiguous copy of all arguments, so that every argv pointer stays valid for the
        // duration of a single `withUnsafeBufferPointer`. The trailing byte is never sent; it
        // only guarantees a non-nil base address when every argument is empty.
        var storage: [UInt8] = []
        storage.reserveCapacity(payload + 1)
        var offsets: [Int] = []
        var lengths: [Int] = []
        offsets.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            offsets.append(storage.count)
            lengths.append(argument.bytes.count)
            storage.append(contentsOf: argument.bytes)
        }
        storage.append(0)

        let encoded: Bool = storage.withUnsafeBufferPointer { storageBuffer in
            guard let base = storageBuffer.baseAddress else { return false }
            var argv: [UnsafePointer<CChar>?] = offsets.map {
                UnsafeRawPointer(base + $0).assumingMemoryBound(to: CChar.self)
            }
            var command: UnsafeMutablePointer<CChar>?
            let length = redisFormatCommandArgv(&command, Int32(arguments.count), &argv, lengths)
            guard length >= 0, let command else { return false }
            defer { redisFreeCommand(command) }
            buffer.writeBytes(UnsafeRawBufferPointer(start: command, count: Int(length)))
            return true
        }
        guard encoded else { throw .invalidCommand("hiredis could not allocate the encoded command") }
    }
}

/// A hiredis `redisReader`: bytes in, complete replies out. Owns the reader and frees it.
///
/// hiredis 0.14.1 rejects with a protocol error: an unknown type byte, non-numeric or
/// out-of-range lengths and integers (`:abc`, `$-5`, `*-2`, `$abc`), and arrays nested more
/// than 8 deep (its task stack has 9 slots). It waits for more bytes when a reply is
/// incomplete, however large the declared length, so the reader also enforces
/// `maxReplyBytes`: the bytes fed for a reply that is still incomplete.
struct HiredisReader: ~Copyable {
    private let reader: UnsafeMutablePointer<redisReader>
    private let maxReplyBytes: Int
    /// Bytes fed since the last complete reply, plus the unread rest of the reader's buffer.
    private var bytesOfCurrentReply = 0

    init(maxReplyBytes: Int) throws(RedisError) {
        guard let reader = redisReaderCreate() else {
            throw .protocolError("hiredis could not allocate a reply reader")
        }
        self.reader = reader
        self.maxReplyBytes = maxReplyBytes
    }

    deinit { redisReaderFree(reader) }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        guard redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK else {
            throw .protocolError(errorString)
        }
        bytesOfCurrentReply += bytes.count
    }

    /// The next complete reply, or nil when more bytes are needed.
    mutating func next() throws(RedisError) -> RedisValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else {
            throw .protocolError(errorString)
        }
        guard let reply else {
            if bytesOfCurrentReply > maxReplyBytes {
                throw .protocolError("a reply is larger than the limit of \(maxReplyBytes) bytes")
            }
            return nil
        }
        defer { freeReplyObject(reply) }
        bytesOfCurrentReply = reader.pointee.len - reader.pointee.pos
        return try Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
    }

    private var errorString: String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Copies a hiredis reply tree into a `RedisValue`. The recursion is bounded by hiredis'
    /// nesting limit.
    private static func value(of reply: UnsafePointer<redisReply>) throws(RedisError) -> RedisValue {
        let object = reply.pointee
        switch object.type {
        case REDIS_REPLY_STRING:
            return .bulkString(try bytes(of: object))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: try bytes(of: object), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: try bytes(of: object), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(object.integer)
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            guard object.elements > 0 else { return .array([]) }
            guard let elements = object.element else {
                throw .protocolError("hiredis returned an array of \(object.elements) elements without storage")
            }
            var values: [RedisValue] = []
            values.reserveCapacity(object.elements)
            for element in UnsafeBufferPointer(start: elements, count: object.elements) {
                guard let element else { throw .protocolError("hiredis returned an array with a missing element") }
                values.append(try value(of: element))
            }
            return .array(values)
        default:
            throw .protocolError("hiredis returned an unknown reply type \(object.type)")
        }
    }

    private static func bytes(of object: redisReply) throws(RedisError) -> [UInt8] {
        guard object.len > 0 else { return [] }
        guard let string = object.str else {
            throw .protocolError("hiredis returned a string of \(object.len) bytes without storage")
        }
        return Array(UnsafeRawBufferPointer(start: string, count: object.len))
    }
}
