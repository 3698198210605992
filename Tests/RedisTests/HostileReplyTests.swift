import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import Redis

/// The decoder and the command handler on an `EmbeddedChannel`: no sockets, every byte chosen
/// by the test, including bytes no honest server sends.
@Suite("Replies, well-formed and hostile")
struct HostileReplyTests {
    /// A channel with only the decoder, so the values it emits can be read back.
    private func decoderChannel(maxReplyBytes: Int = RedisReplyDecoder.defaultMaxReplyBytes) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RedisReplyDecoder(maxReplyBytes: maxReplyBytes))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    private func decode(_ wire: String) throws -> [RedisValue] {
        let channel = try decoderChannel()
        try channel.writeInbound(ByteBuffer(string: wire))
        var values: [RedisValue] = []
        while let value = try channel.readInbound(as: RedisValue.self) { values.append(value) }
        #expect(try channel.finish().isClean)
        return values
    }

    @Test("Every reply type decodes", arguments: [
        ("+OK\r\n", RedisValue.simpleString("OK")),
        ("-ERR bad thing\r\n", .error("ERR bad thing")),
        (":-9223372036854775808\r\n", .integer(.min)),
        (":42\r\n", .integer(42)),
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("$0\r\n\r\n", .bulkString([])),
        ("*0\r\n", .array([])),
        ("*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n", .array([.bulkString([97]), .array([.integer(1), .null]), .simpleString("x")])),
    ])
    func decodesEveryType(wire: String, expected: RedisValue) throws {
        #expect(try decode(wire) == [expected])
    }

    @Test func binaryBulkStringWithCRLFInside() throws {
        let payload: [UInt8] = [0x0d, 0x0a, 0x00, 0xff, 0x24, 0x0d, 0x0a, 0x2a]
        let channel = try decoderChannel()
        var buffer = ByteBuffer(string: "$\(payload.count)\r\n")
        buffer.writeBytes(payload)
        buffer.writeString("\r\n:7\r\n")
        try channel.writeInbound(buffer)
        #expect(try channel.readInbound(as: RedisValue.self) == .bulkString(payload))
        #expect(try channel.readInbound(as: RedisValue.self) == .integer(7))
        #expect(try channel.finish().isClean)
    }

    @Test func repliesSplitIntoSingleBytesWaitForTheirEnd() throws {
        let wire = Array("*3\r\n$12\r\nhello\r\nworld\r\n:-17\r\n*2\r\n+OK\r\n$-1\r\n+PONG\r\n".utf8)
        let firstEnd = wire.count - "+PONG\r\n".utf8.count
        let channel = try decoderChannel()
        var values: [RedisValue] = []
        for (offset, byte) in wire.enumerated() {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            while let value = try channel.readInbound(as: RedisValue.self) { values.append(value) }
            if offset < firstEnd - 1 { #expect(values.isEmpty, "a value after only \(offset + 1) bytes") }
        }
        #expect(values == [
            .array([.bulkString(Array("hello\r\nworld".utf8)), .integer(-17), .array([.simpleString("OK"), .null])]),
            .simpleString("PONG"),
        ])
        #expect(channel.isActive)
        #expect(try channel.finish().isClean)
    }

    @Test func arraysNestedEightDeepDecode() throws {
        let wire = String(repeating: "*1\r\n", count: 8) + ":5\r\n"
        var expected = RedisValue.integer(5)
        for _ in 0..<8 { expected = .array([expected]) }
        #expect(try decode(wire) == [expected])
    }

    @Test("Malformed bytes are a protocol error that closes the channel", arguments: [
        ("?garbage\r\n", #"Protocol error, got "?" as reply type byte"#),
        ("$-5\r\n", "Bulk string length out of range"),
        ("*-2\r\n", "Multi-bulk length out of range"),
        ("*3000000000\r\n", "Multi-bulk length out of range"),
        (":abc\r\n", "Bad integer value"),
        (":12a\r\n", "Bad integer value"),
        (":\r\n", "Bad integer value"),
        (":99999999999999999999999\r\n", "Bad integer value"),
        ("$abc\r\n", "Bad bulk string length"),
        ("$ 3\r\nabc\r\n", "Bad bulk string length"),
        ("*x\r\n", "Bad multi-bulk length"),
        (String(repeating: "*1\r\n", count: 9) + ":5\r\n", "No support for nested multi bulk replies with depth > 7"),
    ])
    func malformed(wire: String, hiredisMessage: String) throws {
        let channel = try decoderChannel()
        #expect(throws: RedisError.protocolError(hiredisMessage)) {
            try channel.writeInbound(ByteBuffer(string: wire))
        }
        #expect(!channel.isActive)
        #expect(try channel.readInbound(as: RedisValue.self) == nil)
        // Later bytes are ignored rather than fed to a reader in its error state.
        try channel.writeInbound(ByteBuffer(string: "+OK\r\n"))
        #expect(try channel.readInbound(as: RedisValue.self) == nil)
    }

    @Test func validRepliesBeforeGarbageAreDelivered() throws {
        let channel = try decoderChannel()
        #expect(throws: RedisError.protocolError(#"Protocol error, got "!" as reply type byte"#)) {
            try channel.writeInbound(ByteBuffer(string: ":1\r\n+two\r\n!\r\n"))
        }
        #expect(try channel.readInbound(as: RedisValue.self) == .integer(1))
        #expect(try channel.readInbound(as: RedisValue.self) == .simpleString("two"))
        #expect(!channel.isActive)
    }

    @Test func hugeDeclaredLengthWaitsUntilTheReplyLimit() throws {
        let channel = try decoderChannel(maxReplyBytes: 4096)
        try channel.writeInbound(ByteBuffer(string: "$999999999999\r\n"))
        try channel.writeInbound(ByteBuffer(repeating: UInt8(ascii: "x"), count: 4000))
        #expect(try channel.readInbound(as: RedisValue.self) == nil)
        #expect(channel.isActive)
        #expect(throws: RedisError.protocolError("a reply is larger than the limit of 4096 bytes")) {
            try channel.writeInbound(ByteBuffer(repeating: UInt8(ascii: "x"), count: 100))
        }
        #expect(!channel.isActive)
    }

    @Test func replyLimitCountsOneReplyNotTheWholeStream() throws {
        let channel = try decoderChannel(maxReplyBytes: 64)
        let reply = "$40\r\n" + String(repeating: "y", count: 40) + "\r\n"
        for _ in 0..<20 { try channel.writeInbound(ByteBuffer(string: reply)) }
        var count = 0
        while try channel.readInbound(as: RedisValue.self) != nil { count += 1 }
        #expect(count == 20)
        #expect(try channel.finish().isClean)
    }

    // MARK: Command handler

    /// Decoder and command handler, as a connection has them.
    private func connectionChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers(
            RedisReplyDecoder(),
            RedisCommandHandler(address: "test:6379", logger: Logger(label: "test")))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    private func request(_ channel: EmbeddedChannel, _ commands: [[RedisArgument]],
                         timeout: Duration = .seconds(1)) throws -> EventLoopFuture<[RedisValue]> {
        var encoded = channel.allocator.buffer(capacity: 64)
        for command in commands { try HiredisEncoder.encode(command, into: &encoded) }
        let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
        channel.writeAndFlush(RedisRequest(encoded: encoded, replyCount: commands.count, command: "TEST",
                                           timeout: timeout, promise: promise), promise: nil)
        return promise.futureResult
    }

    private func outcome(_ future: EventLoopFuture<[RedisValue]>) -> Result<[RedisValue], any Error>? {
        var outcome: Result<[RedisValue], any Error>?
        future.assumeIsolated().whenComplete { outcome = $0 }
        return outcome
    }

    private func failure(_ future: EventLoopFuture<[RedisValue]>) -> RedisError? {
        guard case .failure(let error) = outcome(future) else { return nil }
        return error as? RedisError
    }

    @Test func encodesWithHiredisBinarySafe() throws {
        var buffer = ByteBuffer()
        try HiredisEncoder.encode(["SET", "k", RedisArgument([0x0d, 0x0a, 0x00]), ""], into: &buffer)
        #expect(buffer == ByteBuffer(bytes: Array("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n".utf8) + [0x0d, 0x0a, 0x00]
            + Array("\r\n$0\r\n\r\n".utf8)))
        #expect(throws: RedisError.invalidCommand("a command needs at least one argument")) {
            try HiredisEncoder.encode([], into: &buffer)
        }
    }

    @Test func pipelinedRequestsGetTheirRepliesInOrder() throws {
        let channel = try connectionChannel()
        let first = try request(channel, [["GET", "a"]])
        let second = try request(channel, [["INCR", "b"], ["PING"], ["NOPE"]])
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "*2\r\n$3\r\nGET\r\n$1\r\na\r\n"))
        #expect(try channel.readOutbound(as: ByteBuffer.self)
            == ByteBuffer(string: "*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nNOPE\r\n"))

        try channel.writeInbound(ByteBuffer(string: "$1\r\nx\r\n:3\r\n+PO"))
        #expect(try outcome(first)?.get() == [.bulkString([120])])
        #expect(outcome(second) == nil)
        try channel.writeInbound(ByteBuffer(string: "NG\r\n-ERR unknown command 'NOPE'\r\n"))
        #expect(try outcome(second)?.get() == [.integer(3), .simpleString("PONG"), .error("ERR unknown command 'NOPE'")])
        #expect(try channel.finish().isClean)
    }

    @Test func malformedReplyFailsEveryPendingRequest() throws {
        let channel = try connectionChannel()
        let first = try request(channel, [["GET", "a"]])
        let second = try request(channel, [["GET", "b"]])
        try channel.writeInbound(ByteBuffer(string: "$1\r\nx\r\n:zz\r\n"))
        #expect(try outcome(first)?.get() == [.bulkString([120])])
        #expect(failure(second) == .protocolError("Bad integer value"))
        #expect(!channel.isActive)
        let late = try request(channel, [["PING"]])
        #expect(failure(late) == .connectionClosed(address: "test:6379"))
    }

    @Test func replyWithoutRequestIsAProtocolError() throws {
        let channel = try connectionChannel()
        try channel.writeInbound(ByteBuffer(string: "+surprise\r\n"))
        #expect(!channel.isActive)
    }

    @Test func closeFailsPendingRequests() throws {
        let channel = try connectionChannel()
        let pending = try request(channel, [["BLPOP", "q", "0"]])
        try channel.close().wait()
        #expect(failure(pending) == .connectionClosed(address: "test:6379"))
    }

    @Test func missingReplyTimesOutAndClosesTheChannel() throws {
        let channel = try connectionChannel()
        let slow = try request(channel, [["GET", "a"]], timeout: .milliseconds(300))
        let behind = try request(channel, [["GET", "b"]], timeout: .seconds(5))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(299))
        #expect(outcome(slow) == nil)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(failure(slow) == .timeout(command: "TEST", after: .milliseconds(300)))
        #expect(failure(behind) == .connectionClosed(address: "test:6379"))
        #expect(!channel.isActive)
        // A reply that arrives late is dropped, never given to another request.
        try channel.writeInbound(ByteBuffer(string: "$1\r\nx\r\n"))
    }

    // MARK: Accessors

    @Test func accessorsRejectTheWrongKindOfReply() throws {
        #expect(throws: RedisError.unexpectedReply(expected: "an integer", got: "array of 0 elements")) {
            try RedisValue.array([]).int()
        }
        #expect(throws: RedisError.unexpectedReply(expected: "an integer", got: #"bulk string "12x""#)) {
            try RedisValue.bulkString(Array("12x".utf8)).int()
        }
        #expect(throws: RedisError.unexpectedReply(expected: "a UTF-8 string", got: "binary bulk string of 2 bytes")) {
            try RedisValue.bulkString([0xff, 0xfe]).string()
        }
        #expect(throws: RedisError.unexpectedReply(expected: "a UTF-8 string", got: "null")) {
            try RedisValue.null.string()
        }
        #expect(throws: RedisError.unexpectedReply(expected: "a string", got: "integer 4")) {
            try RedisValue.integer(4).bytes()
        }
        #expect(throws: RedisError.unexpectedReply(expected: "an array", got: #"simple string "OK""#)) {
            try RedisValue.simpleString("OK").array()
        }
        #expect(throws: RedisError.server("WRONGTYPE no")) { try RedisValue.error("WRONGTYPE no").int() }
        let long = String(repeating: "z", count: 1000)
        #expect(throws: RedisError.unexpectedReply(expected: "an integer",
                                                   got: "simple string \"\(String(repeating: "z", count: 64))\"…")) {
            try RedisValue.simpleString(long).int()
        }
        #expect(try RedisValue.bulkString(Array("-12".utf8)).int() == -12)
        #expect(try RedisValue.simpleString("ok").bytes() == Array("ok".utf8))
    }

    @Test func scriptSHA1IsLowercaseHex() {
        #expect(RedisScript("").sha1 == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
