#if canImport(Glibc)
import Glibc
#endif
import Logging
import SMTPProtocol
import Synchronization

/// Faults a test can arm through an ingress node's admin API, only on a node whose
/// configuration sets `testing.fault_injection: true` (otherwise there is no injector and the
/// endpoints refuse).
public final class IngressFaults: Sendable {
    private let crashAfterAck = Atomic<Bool>(false)
    private let logger: Logger

    public init(logger: Logger = Logger(label: "smarthost.ingress")) {
        self.logger = logger
    }

    /// The node exits (status 70, as a SIGKILL: no handler, no flush, no shutdown) as soon as
    /// its next 250 to a message has been written to the client's socket.
    public func crashAfterNextAck() { crashAfterAck.store(true, ordering: .relaxed) }

    /// Sees each reply to a message once it is written to the socket.
    @Sendable func replyWritten(_ reply: SMTPReply) {
        guard reply.code == 250, crashAfterAck.load(ordering: .relaxed) else { return }
        logger.critical("injected fault: exiting right after a 250", metadata: ["reply": "\(reply)"])
        _exit(70)
    }
}
