import NIOCore

/// Inbound: bytes to `RedisValue`s, parsed by hiredis.
///
/// Incomplete replies wait for more bytes, however they are split. Malformed bytes, or a
/// reply over `maxReplyBytes`, fire `RedisError.protocolError` and close the channel: after
/// a framing error nothing that follows can be trusted.
final class RedisReplyDecoder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = RedisValue

    /// Redis' own limit for one bulk string (`proto-max-bulk-len`).
    static let defaultMaxReplyBytes = 512 * 1024 * 1024

    private var reader: HiredisReader
    private var failed = false

    init(maxReplyBytes: Int = RedisReplyDecoder.defaultMaxReplyBytes) throws(RedisError) {
        reader = try HiredisReader(maxReplyBytes: maxReplyBytes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try buffer.withUnsafeReadableBytes { bytes throws(RedisError) in try reader.feed(bytes) }
            while let value = try reader.next() {
                context.fireChannelRead(wrapInboundOut(value))
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension RedisReplyDecoder: Sendable {}
