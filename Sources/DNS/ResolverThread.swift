import CUnbound
import DequeModule
import Foundation
import Synchronization

/// A caller's query on its way to the DNS thread, which answers it exactly once (a second
/// answer would trap in the checked continuation).
struct PendingQuery: Sendable {
    let name: String
    let type: DNSRecordType
    let continuation: CheckedContinuation<DNSAnswer, Never>

    func answer(_ answer: DNSAnswer) {
        continuation.resume(returning: answer)
    }
}

/// The queries callers hand to the DNS thread, and the pipe that wakes it from `poll`.
final class ResolverInbox: Sendable {
    private struct State {
        var queued: [PendingQuery] = []
        /// A byte is in the pipe that the thread has not drained yet: one wake-up is enough.
        var wakePending = false
        var stopping = false
    }

    private let state = Mutex(State())
    let wakeFD: Int32
    private let wakeWriteFD: Int32

    init() throws {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw DNSResolverError(description: "pipe: \(String(cString: strerror(errno)))") }
        for end in ends {
            _ = fcntl(end, F_SETFL, O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)  // not for the processes this one starts
        }
        (wakeFD, wakeWriteFD) = (ends[0], ends[1])
    }

    /// False once the resolver is stopping: the caller answers the query itself.
    func submit(_ query: PendingQuery) -> Bool {
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopping else { return (false, false) }
            state.queued.append(query)
            let wake = !state.wakePending
            state.wakePending = true
            return (true, wake)
        }
        if wake { signal() }
        return accepted
    }

    func stop() {
        state.withLock { $0.stopping = true }
        signal()
    }

    /// The queries submitted since the last call. The pipe is drained before the queue is
    /// taken: a query submitted after the take finds `wakePending` false and writes a byte
    /// that this drain cannot swallow.
    func take() -> (queries: [PendingQuery], stopping: Bool) {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        return state.withLock { state in
            defer { state.queued = []; state.wakePending = false }
            return (state.queued, state.stopping)
        }
    }

    private func signal() {
        var byte: UInt8 = 1
        _ = write(wakeWriteFD, &byte, 1)  // a full pipe already holds a wake-up
    }

    deinit {
        close(wakeFD)
        close(wakeWriteFD)
    }
}

/// One query libunbound is working on. Lives on the DNS thread only; libunbound's callback
/// gets it back through the `mydata` pointer.
final class InFlightQuery {
    let query: PendingQuery
    let deadline: ContinuousClock.Instant
    unowned let thread: ResolverThread
    var id: Int32 = 0
    var isFinished = false

    init(_ query: PendingQuery, deadline: ContinuousClock.Instant, thread: ResolverThread) {
        self.query = query
        self.deadline = deadline
        self.thread = thread
    }
}

/// The DNS thread's state: the `ub_ctx`, from creation to deletion, and the queries in flight.
/// Every libunbound call of the module is made here, on this one thread.
final class ResolverThread {
    static let shutDownMessage = "the DNS resolver is shut down"

    private let context: OpaquePointer
    private let inbox: ResolverInbox
    private let timeout: Duration
    /// By libunbound's async id.
    private var inFlight: [Int32: InFlightQuery] = [:]
    /// The same queries in the order they started, which is deadline order (one timeout for
    /// all); finished ones are dropped when they reach the front.
    private var byDeadline: Deque<InFlightQuery> = []

    private init(context: OpaquePointer, inbox: ResolverInbox, timeout: Duration) {
        self.context = context
        self.inbox = inbox
        self.timeout = timeout
    }

    /// The thread's body: configures a context, reports how that went, serves queries until
    /// the inbox stops, deletes the context.
    static func run(forwarders: [String], timeout: Duration, inbox: ResolverInbox, startup: StartupReport) {
        guard let context = ub_ctx_create() else {
            startup.report(DNSResolverError(description: "libunbound could not create a context"))
            return
        }
        defer { ub_ctx_delete(context) }
        if let error = configure(context, forwarders: forwarders) {
            startup.report(error)
            return
        }
        startup.report(nil)
        ResolverThread(context: context, inbox: inbox, timeout: timeout).serve()
    }

    /// `forwarders` in libunbound's `address@port` form.
    private static func configure(_ context: OpaquePointer, forwarders: [String]) -> DNSResolverError? {
        func failure(_ result: Int32, _ what: String) -> DNSResolverError? {
            result == 0 ? nil : DNSResolverError(description: "\(what): \(String(cString: ub_strerror(result)))")
        }
        // A thread of libunbound's own rather than a forked process; loopback resolvers (a local
        // cache, the tests' server) are allowed.
        if let error = failure(ub_ctx_async(context, 1), "libunbound threads")
            ?? failure(ub_ctx_set_option(context, "do-not-query-localhost:", "no"), "do-not-query-localhost") {
            return error
        }
        if forwarders.isEmpty {
            if let error = failure(ub_ctx_resolvconf(context, nil), "reading /etc/resolv.conf") { return error }
        }
        for forwarder in forwarders {
            if let error = failure(ub_ctx_set_fwd(context, forwarder), "resolver \(forwarder)") { return error }
        }
        // libunbound answers names under test. (RFC 6761) NXDOMAIN itself; the resolvers answer
        // them instead, so that test setups (our dnsmasq, the local cluster) can serve them.
        // This finalizes the configuration, so it comes last. (`ub_ctx_set_option("local-zone:",
        // "test. nodefault")` returns success and does nothing.)
        return failure(ub_ctx_zone_remove(context, "test."), "removing libunbound's local zone test.")
    }

    private func serve() {
        while true {
            let (queries, stopping) = inbox.take()
            if stopping {
                for query in queries { query.answer(.failed(Self.shutDownMessage)) }
                for query in byDeadline where !query.isFinished {
                    cancel(query)
                    query.query.answer(.failed(Self.shutDownMessage))
                }
                return
            }
            for query in queries { start(query) }
            // An error here means libunbound's own thread is gone: the queries end at their deadlines.
            if ub_poll(context) != 0 { _ = ub_process(context) }
            expireOverdue()
            waitForActivity()
        }
    }

    private func start(_ query: PendingQuery) {
        let started = InFlightQuery(query, deadline: ContinuousClock.now + timeout, thread: self)
        // libunbound holds this reference until its callback, or until a successful cancel.
        let reference = Unmanaged.passRetained(started)
        var id: Int32 = 0
        let result = ub_resolve_async(context, query.name, Int32(query.type.rawValue), 1 /* class IN */,
                                      reference.toOpaque(), unboundCallback, &id)
        guard result == 0 else {
            reference.release()
            let reason = String(cString: ub_strerror(result))
            query.answer(result == UB_SYNTAX.rawValue ? .invalidName("\(query.name.debugDescription): \(reason)") : .failed(reason))
            return
        }
        started.id = id
        inFlight[id] = started
        byDeadline.append(started)
    }

    /// From libunbound's callback, inside `ub_process`.
    fileprivate func finish(_ query: InFlightQuery, _ answer: DNSAnswer) {
        // A query that timed out was cancelled, and libunbound then never calls back; should a
        // cancel ever fail, the late answer is dropped here instead of resuming the caller twice.
        guard !query.isFinished else { return }
        inFlight[query.id] = nil
        query.isFinished = true
        query.query.answer(answer)
    }

    private func cancel(_ query: InFlightQuery) {
        inFlight[query.id] = nil
        query.isFinished = true
        // A cancelled query's callback never runs: the reference libunbound held is ours to drop.
        if ub_cancel(context, query.id) == 0 { Unmanaged.passUnretained(query).release() }
    }

    private func expireOverdue() {
        let now = ContinuousClock.now
        while let first = byDeadline.first, first.isFinished || first.deadline <= now {
            byDeadline.removeFirst()
            if !first.isFinished {
                cancel(first)
                first.query.answer(.timeout)
            }
        }
    }

    /// Sleeps until libunbound has answers, a caller submits a query, or the nearest deadline.
    private func waitForActivity() {
        var timeoutMilliseconds: Int32 = -1
        if let nearest = byDeadline.first?.deadline {
            let remaining = max(nearest - ContinuousClock.now, .zero)
            // Rounded up: waking a little early would only spin.
            timeoutMilliseconds = Int32(min(remaining / .milliseconds(1), 60_000).rounded(.up))
        }
        var descriptors = [pollfd(fd: ub_fd(context), events: Int16(POLLIN), revents: 0),
                           pollfd(fd: inbox.wakeFD, events: Int16(POLLIN), revents: 0)]
        _ = poll(&descriptors, nfds_t(descriptors.count), timeoutMilliseconds)
    }
}

/// libunbound's callback (a C function: no captures), on the DNS thread inside `ub_process`.
private func unboundCallback(_ data: UnsafeMutableRawPointer?, _ error: Int32, _ result: UnsafeMutablePointer<ub_result>?) {
    defer { ub_resolve_free(result) }
    guard let data else { return }
    let query = Unmanaged<InFlightQuery>.fromOpaque(data).takeRetainedValue()
    query.thread.finish(query, DNSAnswer(query.query.type, error: error, result: result?.pointee))
}

extension DNSAnswer {
    init(_ type: DNSRecordType, error: Int32, result: ub_result?) {
        guard error == 0, let result else {
            self = .failed("libunbound: \(String(cString: ub_strerror(error)))")
            return
        }
        let ttl = UInt32(clamping: result.ttl)
        if result.nxdomain != 0 {
            self = .nxdomain(ttl: ttl)
        } else if result.rcode != 0 {
            self = .serverFailure(rcode: result.rcode)
        } else if result.havedata == 0 {
            self = .noData(ttl: ttl)
        } else {
            var records: [DNSRecord] = []
            var index = 0
            while let rdata = result.data[index] {
                let bytes = UnsafeRawBufferPointer(start: rdata, count: Int(result.len[index]))
                if let record = RecordData.record(type, bytes) { records.append(record) }
                index += 1
            }
            self = records.isEmpty ? .failed("no well-formed \(type) record in the answer") : .records(records, ttl: ttl)
        }
    }
}
