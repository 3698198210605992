import Synchronization

/// Faults a test can arm through the admin API, only on a node whose configuration sets
/// `testing.fault_injection: true` (otherwise there is no injector and the endpoints refuse):
/// the failures the reconciler exists for, made on purpose so that its repair can be shown.
public final class FaultInjector: Sendable {
    private struct Armed {
        var failedReinserts = 0
        var skippedRecords = 0
        var failedSpoolWrites = 0
        var failedBodyReads = 0
        var failedNotifications = 0
        var crashBeforeSpool = false
    }

    private let armed = Mutex(Armed())

    public init() {}

    /// The next `count` entries that go back to their scheduled queue after an attempt fail to
    /// (they land in limbo with the error, as any failed re-insert must).
    public func failReinserts(_ count: Int) { armed.withLock { $0.failedReinserts += count } }

    /// The next `count` consumed records are marked done without being spooled: a consumer
    /// that committed past a record (the ledger must name those messages).
    public func skipRecords(_ count: Int) { armed.withLock { $0.skippedRecords += count } }

    /// The next `count` spool writes of consumed records fail as a full disk would (the
    /// consumer's retry loop, offsets not committed meanwhile).
    public func failSpoolWrites(_ count: Int) { armed.withLock { $0.failedSpoolWrites += count } }

    /// The next `count` reads of a message's content before sending it fail (a transient failure).
    public func failBodyReads(_ count: Int) { armed.withLock { $0.failedBodyReads += count } }

    /// The next `count` delivery status notifications fail to be queued (the outcome is still recorded).
    public func failNotifications(_ count: Int) { armed.withLock { $0.failedNotifications += count } }

    /// The node exits after its next batch of records is consumed and before it is spooled.
    public func crashBeforeSpool() { armed.withLock { $0.crashBeforeSpool = true } }

    func takeReinsertFailure() -> Bool { take(\.failedReinserts) }
    func takeRecordSkip() -> Bool { take(\.skippedRecords) }
    func takeSpoolWriteFailure() -> Bool { take(\.failedSpoolWrites) }
    func takeBodyReadFailure() -> Bool { take(\.failedBodyReads) }
    func takeNotificationFailure() -> Bool { take(\.failedNotifications) }
    var crashesBeforeSpool: Bool { armed.withLock { $0.crashBeforeSpool } }

    private func take(_ counter: WritableKeyPath<Armed, Int>) -> Bool {
        armed.withLock { state in
            guard state[keyPath: counter] > 0 else { return false }
            state[keyPath: counter] -= 1
            return true
        }
    }
}
