import NIOCore
import NIOEmbedded

/// Feeds a handler's channel the text a client sends.
func send(_ channel: NIOAsyncTestingChannel, _ text: String) async throws {
    try await channel.writeInbound(channel.allocator.buffer(string: text))
}

/// Everything the handler wrote since the last call.
func replies(_ channel: NIOAsyncTestingChannel) async throws -> String {
    var text = ""
    while let buffer = try await channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
    return text
}
