import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A PROXY protocol header (HAProxy's v1 text or v2 binary form): who the client really is
/// when a load balancer made the TCP connection.
public enum ProxyHeader: Sendable, Equatable {
    /// The connection is relayed for this client.
    case proxied(clientIP: String, clientPort: Int)
    /// The proxy speaks for itself (v2 LOCAL, e.g. health checks) or does not know the client
    /// (v1 UNKNOWN, v2 UNSPEC): use the connection's own address.
    case local

    public enum ParseResult: Sendable, Equatable {
        case needMoreData
        case invalid(String)
        case complete(ProxyHeader, consumed: Int)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// v1: "PROXY TCP6 " + two 39-character addresses + two ports + CRLF fits in 107 octets.
    static let v1MaximumLength = 107
    /// v2: we accept addresses plus a reasonable amount of TLVs, not the 64 KiB the length allows.
    static let v2MaximumLength = 16 + 512

    /// Parses the start of a connection's bytes.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult {
        let data = Array(bytes.prefix(v2MaximumLength))
        if data.count >= 1, data[0] == 0x0D {
            return parseV2(data)
        }
        return parseV1(data)
    }

    private static func parseV1(_ data: [UInt8]) -> ParseResult {
        let prefix = Array("PROXY ".utf8)
        guard Array(data.prefix(prefix.count)) == Array(prefix.prefix(data.count)) else { return .invalid("not a PROXY header") }
        guard let lf = data.prefix(v1MaximumLength).firstIndex(of: 10) else {
            return data.count >= v1MaximumLength ? .invalid("PROXY v1 line longer than 107 octets") : .needMoreData
        }
        guard lf > 0, data[lf - 1] == 13, let line = String(validating: data[..<(lf - 1)], as: UTF8.self) else {
            return .invalid("PROXY v1 line must end with CRLF")
        }
        let words = line.split(separator: " ", omittingEmptySubsequences: false)
        if words.count >= 2, words[1] == "UNKNOWN" { return .complete(.local, consumed: lf + 1) }
        guard words.count == 6, words[1] == "TCP4" || words[1] == "TCP6" else { return .invalid("malformed PROXY v1 line") }
        let family = words[1] == "TCP4" ? AF_INET : AF_INET6
        guard isAddress(String(words[2]), family: family), isAddress(String(words[3]), family: family),
              let source = port(words[4]), port(words[5]) != nil else {
            return .invalid("malformed PROXY v1 addresses")
        }
        return .complete(.proxied(clientIP: String(words[2]), clientPort: source), consumed: lf + 1)
    }

    private static func parseV2(_ data: [UInt8]) -> ParseResult {
        guard Array(data.prefix(12)) == Array(v2Signature.prefix(min(12, data.count))) else { return .invalid("not a PROXY header") }
        guard data.count >= 16 else { return .needMoreData }
        let versionCommand = data[12], family = data[13]
        let length = Int(data[14]) << 8 | Int(data[15])
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header with version \(versionCommand >> 4)") }
        guard 16 + length <= v2MaximumLength else { return .invalid("PROXY v2 header longer than \(v2MaximumLength) octets") }
        guard data.count >= 16 + length else { return .needMoreData }
        let consumed = 16 + length
        switch versionCommand & 0x0F {
        case 0x0: return .complete(.local, consumed: consumed)
        case 0x1: break
        default: return .invalid("PROXY v2 command \(versionCommand & 0x0F) is unknown")
        }
        let body = Array(data[16..<consumed])
        switch family {
        case 0x11 where length >= 12:  // TCP over IPv4
            return .complete(.proxied(clientIP: text(body[0..<4], family: AF_INET), clientPort: Int(body[8]) << 8 | Int(body[9])), consumed: consumed)
        case 0x21 where length >= 36:  // TCP over IPv6
            return .complete(.proxied(clientIP: text(body[0..<16], family: AF_INET6), clientPort: Int(body[32]) << 8 | Int(body[33])), consumed: consumed)
        case 0x00:
            return .complete(.local, consumed: consumed)
        default:
            return .invalid("PROXY v2 address family \(family) is not TCP over IPv4 or IPv6, or too short")
        }
    }

    private static func port(_ text: Substring) -> Int? {
        guard (1...5).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }), text.first != "0" || text == "0",
              let value = Int(text), value <= 65535 else { return nil }
        return value
    }

    private static func isAddress(_ text: String, family: Int32) -> Bool {
        var scratch = [UInt8](repeating: 0, count: 16)
        return inet_pton(family, text, &scratch) == 1
    }

    private static func text(_ bytes: ArraySlice<UInt8>, family: Int32) -> String {
        var output = [CChar](repeating: 0, count: 64)
        let address = Array(bytes)
        _ = inet_ntop(family, address, &output, socklen_t(output.count))
        return String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Fired down the pipeline once the PROXY header has been read.
public struct ProxyHeaderReceived: Sendable {
    public let header: ProxyHeader
}

/// First handler of a connection on a listener behind a load balancer: reads the PROXY header
/// (v1 or v2), announces it with `ProxyHeaderReceived`, passes on any bytes after it and
/// removes itself. A connection without a valid header within `timeout` is closed.
public final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private var buffer: ByteBuffer?
    private var deadline: Scheduled<Void>?
    private let timeout: Duration

    public init(timeout: Duration = .seconds(5)) {
        self.timeout = timeout
    }

    public func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) { loopBound.value.close(promise: nil) }
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        switch ProxyHeader.parse(buffer!.readableBytesView) {
        case .needMoreData:
            return
        case .invalid:
            deadline?.cancel()
            buffer = nil
            context.close(promise: nil)
        case .complete(let header, let consumed):
            deadline?.cancel()
            buffer!.moveReaderIndex(forwardBy: consumed)
            let rest = buffer!
            buffer = nil
            context.fireUserInboundEventTriggered(ProxyHeaderReceived(header: header))
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }
}
