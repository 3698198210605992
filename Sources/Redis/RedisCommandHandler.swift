import Logging
import NIOCore

/// What `RedisConnection` writes into its channel: one or more encoded commands and the
/// promise for their replies, in order.
struct RedisRequest: Sendable {
    var encoded: ByteBuffer
    var replyCount: Int
    /// For the timeout error and logs: the command name, never its arguments.
    var command: String
    var timeout: Duration
    var promise: EventLoopPromise<[RedisValue]>
}

/// Matches replies to requests: Redis answers in the order it receives commands, so a FIFO
/// of pending requests is all the bookkeeping pipelining needs.
///
/// A request without its replies by its deadline fails with `RedisError.timeout` and closes
/// the channel: a late reply would otherwise be handed to the next request. When the channel
/// breaks or closes, every pending request fails.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RedisValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var id: UInt64
        var request: RedisRequest
        var replies: [RedisValue]
        var deadline: Scheduled<Void>
    }

    private let address: String
    private let logger: Logger
    private var pending = CircularBuffer<Pending>()
    private var nextID: UInt64 = 0
    /// Set once the channel is closing or closed; later requests fail with it at once.
    private var closedError: RedisError?

    init(address: String, logger: Logger) {
        self.address = address
        self.logger = logger
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let closedError {
            request.promise.fail(closedError)
            promise?.fail(closedError)
            return
        }
        let id = nextID
        nextID &+= 1
        let deadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(request.timeout)) {
            self.timedOut(id: id, context: context)
        }
        pending.append(Pending(id: id, request: request, replies: [], deadline: deadline))
        context.write(wrapOutboundOut(request.encoded), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard closedError == nil else { return }  // a reply racing our own close: nobody waits for it
        let value = unwrapInboundIn(data)
        guard !pending.isEmpty else {
            fail(context: context, with: .protocolError("a reply arrived while no command was waiting: \(value)"))
            return
        }
        pending[pending.startIndex].replies.append(value)
        if pending[pending.startIndex].replies.count == pending[pending.startIndex].request.replyCount {
            let done = pending.removeFirst()
            done.deadline.cancel()
            done.request.promise.succeed(done.replies)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? RedisError {
            fail(context: context, with: error)
        } else {
            logger.warning("Redis connection failed", metadata: ["address": "\(address)", "error": "\(error)"])
            fail(context: context, with: .connectionClosed(address: address))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closedError = closedError ?? .connectionClosed(address: address)
        fail(context: context, with: .connectionClosed(address: address))
        context.fireChannelInactive()
    }

    private func timedOut(id: UInt64, context: ChannelHandlerContext) {
        guard let index = pending.firstIndex(where: { $0.id == id }) else { return }
        let expired = pending.remove(at: index)
        logger.warning("Redis command timed out; closing its connection",
                       metadata: ["address": "\(address)", "command": "\(expired.request.command)",
                                  "timeout": "\(expired.request.timeout)"])
        fail(context: context, with: .connectionClosed(address: address))
        expired.request.promise.fail(RedisError.timeout(command: expired.request.command, after: expired.request.timeout))
    }

    /// Closes the channel, then fails every pending request with `error`. Closing first means
    /// that whoever a failure wakes up already sees the channel inactive and reconnects.
    private func fail(context: ChannelHandlerContext, with error: RedisError) {
        let failed = pending
        pending.removeAll()
        if closedError == nil {
            closedError = .connectionClosed(address: address)
            context.close(promise: nil)
        }
        for request in failed {
            request.deadline.cancel()
            request.request.promise.fail(error)
        }
    }
}
