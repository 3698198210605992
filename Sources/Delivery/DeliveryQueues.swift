import DequeModule
import Events
import HeapModule
import QueueRecord
import SMTPProtocol

/// The queues of one delivery node, as pure state (no I/O, no clock: callers pass `now`), in
/// the KumoMTA/PowerMTA model (docs/architecture.md):
///
/// - **scheduled queues**, one per (tenant, job, domain), each ordered by due time;
/// - **ready queues**, one per (egress pool, site), bounded, one FIFO per lane, feeding
///   that site's connections;
/// - **in flight**: taken by a connection, outcome not yet recorded;
/// - **held**: no route (or, later, suspended), with the reason;
/// - **limbo**: an entry whose outcome could not be recorded (a spool error), with the error.
///
/// Every entry is in exactly one of them, so every queued message can be enumerated. An
/// empty scheduled or ready queue is removed in the same step that emptied it, and
/// recreated by the next insert: there is no moment when an entry is in no queue.
public struct DeliveryQueues: Sendable {
    /// Where an entry is; the names are the `state` label of `smarthost_queue_entries`.
    public enum EntryState: String, Sendable, CaseIterable {
        case scheduled, ready, inFlight = "in-flight", held, limbo
    }

    public struct Counts: Sendable, Equatable {
        public var scheduled = 0
        public var ready = 0
        public var inFlight = 0
        public var held = 0
        public var limbo = 0
        /// Scheduled entries that have been attempted (waiting for a retry).
        public var deferred = 0
        public var scheduledQueues = 0
        public var readyQueues = 0

        public var total: Int { scheduled + ready + inFlight + held + limbo }

        public subscript(state: EntryState) -> Int {
            switch state {
            case .scheduled: scheduled
            case .ready: ready
            case .inFlight: inFlight
            case .held: held
            case .limbo: limbo
            }
        }
    }

    /// Why an entry is in the held set or in limbo.
    public struct Parked: Sendable, Equatable {
        /// In limbo: the recipients still to deliver (possibly none).
        public var entry: QueueEntry
        public var reason: String
        public var since: UInt64
        /// In limbo: recipients that reached a final outcome the spool does not know yet.
        public var unrecordedFinals: [Mailbox] = []
        /// In limbo: the events of that outcome, written with it when it is recorded.
        public var events: [MessageEvent] = []

        public init(entry: QueueEntry, reason: String, since: UInt64, unrecordedFinals: [Mailbox] = [], events: [MessageEvent] = []) {
            self.entry = entry
            self.reason = reason
            self.since = since
            self.unrecordedFinals = unrecordedFinals
            self.events = events
        }
    }

    fileprivate struct Scheduled: Comparable, Sendable {
        var entry: QueueEntry
        var sequence: UInt64

        static func < (a: Self, b: Self) -> Bool {
            (a.entry.dueAt, a.sequence) < (b.entry.dueAt, b.sequence)
        }
        static func == (a: Self, b: Self) -> Bool { a.sequence == b.sequence }
    }

    /// A scheduled queue keeps one heap per lane, so that a due transactional entry is not
    /// behind every due bulk entry of the same tenant, job and domain.
    fileprivate struct ScheduledQueue: Sendable {
        var lanes: [Heap<Scheduled>] = Array(repeating: Heap(), count: AcceptedMessage.Lane.allCases.count)

        var isEmpty: Bool { lanes.allSatisfy(\.isEmpty) }
    }

    fileprivate struct ReadyQueue: Sendable {
        var lanes: [Deque<QueueEntry>] = Array(repeating: [], count: AcceptedMessage.Lane.allCases.count)
        var count = 0

        mutating func append(_ entry: QueueEntry) {
            lanes[entry.lane.index].append(entry)
            count += 1
        }

        mutating func prepend(_ entry: QueueEntry) {
            lanes[entry.lane.index].prepend(entry)
            count += 1
        }

        /// Highest lane first: a transactional message waits behind at most the connections'
        /// current messages, never behind a bulk backlog.
        mutating func popFirst() -> QueueEntry? {
            for index in lanes.indices where !lanes[index].isEmpty {
                count -= 1
                return lanes[index].removeFirst()
            }
            return nil
        }
    }

    /// What a promotion did: entries moved (to ready queues or the held set), and entries
    /// whose route failed (an NXDOMAIN, a null MX, a DNS timeout), now in flight for the
    /// caller to record with the reply.
    public struct Promotion: Sendable {
        public var moved = 0
        public var failed: [(entry: QueueEntry, reply: SMTPReply)] = []
    }

    public let readyQueueSize: Int
    private var scheduled: [ScheduledQueueName: ScheduledQueue] = [:]
    private var ready: [SiteKey: ReadyQueue] = [:]
    private var inFlight: [QueueEntry.Key: QueueEntry] = [:]
    private var held: [QueueEntry.Key: Parked] = [:]
    private var limbo: [QueueEntry.Key: Parked] = [:]
    /// Where each entry is, so that the orphan sweep can ask about any spooled message.
    private var location: [QueueEntry.Key: EntryState] = [:]
    /// Entries per message, so that a view can count distinct queued messages.
    private var entriesOfMessage: [MessageID: Int] = [:]
    private var sequence: UInt64 = 0
    public private(set) var counts = Counts()

    public init(readyQueueSize: Int) {
        precondition(readyQueueSize > 0)
        self.readyQueueSize = readyQueueSize
    }

    /// Puts an entry in its scheduled queue, due at `entry.dueAt`.
    public mutating func schedule(_ entry: QueueEntry) {
        sequence += 1
        if scheduled[entry.queue] == nil { counts.scheduledQueues += 1 }
        scheduled[entry.queue, default: ScheduledQueue()].lanes[entry.lane.index].insert(Scheduled(entry: entry, sequence: sequence))
        counts.scheduled += 1
        if entry.attempts > 0 { counts.deferred += 1 }
        place(entry, .scheduled)
    }

    private mutating func place(_ entry: QueueEntry, _ state: EntryState) {
        guard location.updateValue(state, forKey: entry.key) == nil else { return }
        entriesOfMessage[entry.id, default: 0] += 1
        let key = DepthKey(tenant: entry.tenant, domain: entry.domain)
        depths[key, default: Depth()].entries += 1
        depths[key]!.oldestReceivedAt = min(depths[key]!.oldestReceivedAt, entry.receivedAt)
    }

    private mutating func unplace(_ entry: QueueEntry) {
        guard location.removeValue(forKey: entry.key) != nil else { return }
        if entriesOfMessage[entry.id, default: 1] <= 1 { entriesOfMessage[entry.id] = nil } else { entriesOfMessage[entry.id]! -= 1 }
        let key = DepthKey(tenant: entry.tenant, domain: entry.domain)
        guard var depth = depths[key] else { return }
        depth.entries -= 1
        if depth.entries <= 0 {
            depths[key] = nil
            return
        }
        // The oldest may have left: found again (one pass over that tenant and domain) when next asked.
        if entry.receivedAt <= depth.oldestReceivedAt { depth.oldestIsStale = true }
        depths[key] = depth
    }

    /// Entries per tenant and destination domain, and the oldest reception among them: kept as
    /// entries come and go, for the depth gauges (no pass over the queues).
    public struct Depth: Sendable, Equatable {
        public var entries = 0
        public var oldestReceivedAt: UInt64 = .max
        /// The oldest entry left; `refreshOldest` finds the next.
        var oldestIsStale = false
    }

    public private(set) var depths: [DepthKey: Depth] = [:]

    /// Finds the oldest reception again where it left, in one pass that skips the scheduled
    /// queues of every other tenant and domain. Returns how many keys needed it.
    @discardableResult
    public mutating func refreshOldest() -> Int {
        let stale = Set(depths.filter(\.value.oldestIsStale).map(\.key))
        guard !stale.isEmpty else { return 0 }
        var oldest: [DepthKey: UInt64] = [:]
        contents.forEachEntry(in: { stale.contains(DepthKey(tenant: $0.tenant, domain: $0.domain)) }) { entry, _ in
            let key = DepthKey(tenant: entry.tenant, domain: entry.domain)
            if stale.contains(key) { oldest[key] = min(oldest[key] ?? .max, entry.receivedAt) }
        }
        for key in stale {
            depths[key]?.oldestReceivedAt = oldest[key] ?? .max
            depths[key]?.oldestIsStale = false
        }
        return stale.count
    }

    /// Where the entry is, or nil when it is in none of the queues and sets.
    public func location(of key: QueueEntry.Key) -> EntryState? { location[key] }

    /// Distinct messages with at least one entry somewhere.
    public var queuedMessages: Int { entriesOfMessage.count }

    /// Moves entries whose time has come from their scheduled queues to the ready queue of
    /// their site, higher lanes first, as long as the site's ready queue has room in that
    /// lane (each lane has its own bound, so a full bulk lane never keeps a transactional
    /// entry out). Entries without a route go to the held set; entries whose route failed
    /// go in flight and are returned for the caller to record.
    @discardableResult
    public mutating func promote(now: UInt64, route: (String) -> RouteDecision,
                                 accepts: (QueueEntry, SiteKey) -> Bool = { _, _ in true }) -> Promotion {
        var promotion = Promotion()
        for name in Array(scheduled.keys) {
            // The route depends only on the domain, the same for the whole queue.
            let decision = route(name.domain)
            for lane in AcceptedMessage.Lane.allCases {
                entries: while let head = scheduled[name]?.lanes[lane.index].min, head.entry.dueAt <= now {
                    switch decision {
                    case .wait:
                        break entries
                    case .hold(let reason):
                        popScheduled(name, lane)
                        held[head.entry.key] = Parked(entry: head.entry, reason: reason, since: now)
                        counts.held += 1
                        place(head.entry, .held)
                    case .fail(let reply):
                        popScheduled(name, lane)
                        fly(head.entry)
                        promotion.failed.append((head.entry, reply))
                    case .deliver(let site):
                        let key = SiteKey(pool: head.entry.pool, site: site)
                        guard accepts(head.entry, key), (ready[key]?.lanes[lane.index].count ?? 0) < readyQueueSize else { break entries }
                        popScheduled(name, lane)
                        appendReady(head.entry, to: key)
                    }
                    promotion.moved += 1
                }
            }
        }
        return promotion
    }

    private mutating func popScheduled(_ name: ScheduledQueueName, _ lane: AcceptedMessage.Lane) {
        guard let removed = scheduled[name]?.lanes[lane.index].removeMin() else { return }
        unscheduled(removed.entry)
        dropIfEmpty(name)
    }

    private mutating func unscheduled(_ entry: QueueEntry) {
        counts.scheduled -= 1
        if entry.attempts > 0 { counts.deferred -= 1 }
    }

    private mutating func dropIfEmpty(_ name: ScheduledQueueName) {
        if scheduled[name]?.isEmpty == true {
            scheduled[name] = nil
            counts.scheduledQueues -= 1
        }
    }

    private mutating func fly(_ entry: QueueEntry) {
        inFlight[entry.key] = entry
        counts.inFlight += 1
        place(entry, .inFlight)
    }

    /// Takes up to `limit` entries that `selected` picks out of the scheduled queues, the ready
    /// queues and the held set into flight, for an operator's retry or delete: the caller
    /// records what becomes of each and lands it. Entries in flight or in limbo stay where
    /// they are (their outcome is being recorded). `include` skips whole scheduled queues.
    public mutating func takeMatching(limit: Int, in include: (ScheduledQueueName) -> Bool = { _ in true },
                                      _ selected: (QueueEntry, EntryState) -> Bool) -> [QueueEntry] {
        var taken: [QueueEntry] = []
        for name in Array(scheduled.keys) where taken.count < limit && include(name) {
            for lane in AcceptedMessage.Lane.allCases where taken.count < limit {
                guard let heap = scheduled[name]?.lanes[lane.index] else { continue }
                var kept: [Scheduled] = []
                var changed = false
                for item in heap.unordered {
                    if taken.count < limit && selected(item.entry, .scheduled) {
                        taken.append(item.entry)
                        unscheduled(item.entry)
                        fly(item.entry)
                        changed = true
                    } else {
                        kept.append(item)
                    }
                }
                if changed { scheduled[name]!.lanes[lane.index] = Heap(kept) }
            }
            dropIfEmpty(name)
        }
        for site in Array(ready.keys) where taken.count < limit {
            guard var queue = ready[site] else { continue }
            var changed = false
            for index in queue.lanes.indices {
                var kept = Deque<QueueEntry>()
                for entry in queue.lanes[index] {
                    if taken.count < limit && selected(entry, .ready) {
                        taken.append(entry)
                        queue.count -= 1
                        counts.ready -= 1
                        fly(entry)
                        changed = true
                    } else {
                        kept.append(entry)
                    }
                }
                queue.lanes[index] = kept
            }
            guard changed else { continue }
            if queue.count == 0 {
                ready[site] = nil
                counts.readyQueues -= 1
            } else {
                ready[site] = queue
            }
        }
        for (key, parked) in held where taken.count < limit && selected(parked.entry, .held) {
            held[key] = nil
            counts.held -= 1
            taken.append(parked.entry)
            fly(parked.entry)
        }
        return taken
    }

    /// Ready queues with entries waiting, and how many.
    public var readySites: [(site: SiteKey, waiting: Int)] {
        ready.map { ($0.key, $0.value.count) }
    }

    /// The next entry for a connection to `site`, now in flight.
    public mutating func take(from site: SiteKey) -> QueueEntry? {
        guard let entry = ready[site]?.popFirst() else { return nil }
        if ready[site]?.count == 0 {
            ready[site] = nil
            counts.readyQueues -= 1
        }
        counts.ready -= 1
        fly(entry)
        return entry
    }

    /// Every entry waiting for `site`, now in flight: a connection to the site failed, and
    /// they share its fate.
    public mutating func takeAll(from site: SiteKey) -> [QueueEntry] {
        var taken: [QueueEntry] = []
        while let entry = take(from: site) { taken.append(entry) }
        return taken
    }

    /// The entries waiting for `site` that `selected` picks (all by default) back to their
    /// scheduled queues, due at `dueAt`, unattempted: the site or their traffic was suspended
    /// or is over its limits for a while. Returns how many moved.
    @discardableResult
    public mutating func returnToScheduled(from site: SiteKey, dueAt: UInt64,
                                           where selected: (QueueEntry) -> Bool = { _ in true }) -> Int {
        var kept: [QueueEntry] = []
        var moved = 0
        while let entry = take(from: site) {
            land(entry.key)
            if selected(entry) {
                var entry = entry
                entry.dueAt = dueAt
                schedule(entry)
                moved += 1
            } else {
                kept.append(entry)
            }
        }
        for entry in kept { appendReady(entry, to: site) }
        return moved
    }

    /// An entry a connection took but may not send yet (its limits said wait) goes back to
    /// the front of its site's ready queue.
    public mutating func putBack(_ key: QueueEntry.Key, to site: SiteKey) {
        guard let entry = land(key) else { return }
        if ready[site] == nil { counts.readyQueues += 1 }
        ready[site, default: ReadyQueue()].prepend(entry)
        counts.ready += 1
        place(entry, .ready)
    }

    private mutating func appendReady(_ entry: QueueEntry, to site: SiteKey) {
        if ready[site] == nil { counts.readyQueues += 1 }
        ready[site, default: ReadyQueue()].append(entry)
        counts.ready += 1
        place(entry, .ready)
    }

    /// Ends an entry's flight: the caller recorded its outcome and reschedules it if needed.
    @discardableResult
    public mutating func land(_ key: QueueEntry.Key) -> QueueEntry? {
        guard let entry = inFlight.removeValue(forKey: key) else { return nil }
        counts.inFlight -= 1
        unplace(entry)
        return entry
    }

    /// An in-flight entry whose outcome could not be recorded goes to limbo, with the error,
    /// where the node can list it and retry it (never only a log line).
    public mutating func moveToLimbo(_ key: QueueEntry.Key, replacing entry: QueueEntry, unrecordedFinals: [Mailbox],
                                     events: [MessageEvent] = [], error: String, now: UInt64) {
        land(key)
        let parked = Parked(entry: entry, reason: error, since: now, unrecordedFinals: unrecordedFinals, events: events)
        if limbo.updateValue(parked, forKey: key) == nil { counts.limbo += 1 }
        place(entry, .limbo)
    }

    /// A limbo entry's outcome is now recorded: it leaves limbo for its scheduled queue (due
    /// at its `dueAt`), or for good when no recipient is left.
    public mutating func releaseLimbo(_ key: QueueEntry.Key) {
        guard let parked = limbo.removeValue(forKey: key) else { return }
        counts.limbo -= 1
        unplace(parked.entry)
        if !parked.entry.recipients.isEmpty { schedule(parked.entry) }
    }

    /// Test-only fault (`testing.fault_injection`): takes up to `count` entries out of their
    /// scheduled queues and every index, as a bug that loses track of them would, so that the
    /// sweep can be shown to find them. Returns them.
    public mutating func dropScheduledSilently(_ count: Int) -> [QueueEntry] {
        var dropped: [QueueEntry] = []
        for name in Array(scheduled.keys) {
            for lane in AcceptedMessage.Lane.allCases {
                while dropped.count < count, let head = scheduled[name]?.lanes[lane.index].min {
                    popScheduled(name, lane)
                    unplace(head.entry)
                    dropped.append(head.entry)
                }
            }
        }
        return dropped
    }

    /// Held entries go back to their scheduled queues, due at `now` (after a configuration
    /// change brings a route, for example).
    public mutating func releaseHeld(now: UInt64) {
        for parked in held.values {
            var entry = parked.entry
            entry.dueAt = now
            schedule(entry)
        }
        held.removeAll()
        counts.held = 0
    }

    /// Every entry, with where it is: for views, the reconciler and tests. `include` skips
    /// whole scheduled queues (the other places are visited whole).
    public func forEachEntry(in include: (ScheduledQueueName) -> Bool = { _ in true }, _ body: (QueueEntry, EntryState) -> Void) {
        contents.forEachEntry(in: include, body)
    }

    /// The queues and sets without the indexes, as a value to read elsewhere: a pass over it
    /// off the queue manager holds up nothing, and what the manager changes meanwhile copies
    /// only the queues it touches (not the per-entry indexes, which the copy leaves out).
    public var contents: Contents { Contents(scheduled: scheduled, ready: ready, inFlight: inFlight, held: held, limbo: limbo) }

    public struct Contents: Sendable {
        fileprivate let scheduled: [ScheduledQueueName: ScheduledQueue]
        fileprivate let ready: [SiteKey: ReadyQueue]
        fileprivate let inFlight: [QueueEntry.Key: QueueEntry]
        fileprivate let held: [QueueEntry.Key: Parked]
        fileprivate let limbo: [QueueEntry.Key: Parked]

        public func forEachEntry(in include: (ScheduledQueueName) -> Bool = { _ in true }, _ body: (QueueEntry, EntryState) -> Void) {
            for (name, queue) in scheduled where include(name) {
                for heap in queue.lanes { for item in heap.unordered { body(item.entry, .scheduled) } }
            }
            for queue in ready.values { for lane in queue.lanes { for entry in lane { body(entry, .ready) } } }
            for entry in inFlight.values { body(entry, .inFlight) }
            for parked in held.values { body(parked.entry, .held) }
            for parked in limbo.values { body(parked.entry, .limbo) }
        }
    }

    public var heldEntries: [Parked] { Array(held.values) }
    public var limboEntries: [Parked] { Array(limbo.values) }
}

extension AcceptedMessage.Lane {
    /// Position in the per-lane arrays, highest priority first.
    var index: Int {
        switch self {
        case .high: 0
        case .normal: 1
        case .low: 2
        }
    }
}
