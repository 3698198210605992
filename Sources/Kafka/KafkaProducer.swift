import CRdKafka
import DequeModule
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Settings of a producer; `KafkaProducer` derives librdkafka's options from them.
public struct KafkaProducerConfiguration: Sendable {
    public var bootstrapServers: [String]
    public var clientID = "smarthost"
    /// The bound on an acknowledgement: a record not acked by then fails with
    /// `KafkaError.deliveryTimedOut`, never hangs.
    public var deliveryTimeout: Duration = .seconds(10)
    /// Records sent but not yet acknowledged; `send` waits for room beyond it (backpressure).
    public var maxInFlight = 10_000
    /// The largest record (key + value + headers) `send` accepts.
    public var maxRecordSize = 32 * 1024 * 1024
    /// How long librdkafka may wait to batch records.
    public var linger: Duration = .milliseconds(2)
    /// Passed to librdkafka as they are (security.protocol, sasl.*, compression.codec, ...).
    public var extraOptions: [String: String] = [:]

    public init(bootstrapServers: [String]) {
        self.bootstrapServers = bootstrapServers
    }

    var librdkafkaOptions: [(String, String)] {
        let timeout = max(deliveryTimeout.milliseconds, 1)
        var options = RdKafkaClient.commonOptions(bootstrapServers: bootstrapServers, clientID: clientID) + [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "\(timeout)"),
            // An in-flight request is only failed when it times out; keep that inside the bound too.
            ("request.timeout.ms", "\(timeout)"),
            ("linger.ms", "\(min(linger.milliseconds, timeout - 1))"),
            ("queue.buffering.max.messages", "\(max(maxInFlight, 1) + 1000)"),
            ("message.max.bytes", "\(maxRecordSize + 64 * 1024)"),
        ]
        options += extraOptions.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return options
    }
}

/// An idempotent, acks=all Kafka producer whose `send` returns only once Kafka has
/// acknowledged the record (or fails within the delivery timeout).
///
/// librdkafka's delivery reports arrive on a dedicated polling thread and resume the
/// waiting task; nothing blocks Swift's cooperative pool.
///
/// When the broker fences the producer or librdkafka raises a fatal error, the producer
/// replaces its librdkafka client with a new one (a new producer id) and goes on: the records
/// involved fail with an error the caller retries, later ones go through the new client.
public final class KafkaProducer: Sendable, Service {
    /// One librdkafka client and the thread polling it.
    private final class Generation: Sendable {
        let number: Int
        let handle: RdKafkaPointer
        let queue: RdKafkaPointer
        /// Set when the producer closes or this generation is replaced.
        let retired = Atomic<Bool>(false)

        init(number: Int, handle: RdKafkaPointer) {
            self.number = number
            self.handle = handle
            self.queue = RdKafkaPointer(raw: rd_kafka_queue_get_main(handle.raw))
            rd_kafka_set_log_queue(handle.raw, queue.raw)
        }
    }

    typealias Completion = @Sendable (Result<DeliveryReport, any Error>) -> Void

    private struct Pending {
        /// nil once the caller was told the record is overdue.
        var completion: Completion?
        let topic: String
        let started: ContinuousClock.Instant
    }

    private struct State {
        var nextID: UInt = 1
        var pending: [UInt: Pending] = [:]
        /// Ids in send order; all share one timeout, so deadlines are in the same order.
        var deadlines: Deque<(id: UInt, deadline: ContinuousClock.Instant)> = []
        /// Records librdkafka holds, including ones whose caller already gave up waiting.
        var inFlight = 0
        var slotWaiters: Deque<CheckedContinuation<Void, any Error>> = []
        var closing = false
        var generation: Generation
        var liveGenerations = 0
        /// Per generation number: sends between choosing that client and `produceva` returning.
        /// Its thread destroys the client only when none are left.
        var producing: [Int: Int] = [:]
        /// Generations whose client is destroyed (or about to be); no send may choose them.
        var finished: Set<Int> = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    public let configuration: KafkaProducerConfiguration
    private let state: Mutex<State>
    private let logger: Logger
    /// Caller-side guard beyond librdkafka's own message timeout, whose scan runs about once a second.
    private let hardDeadline: Duration

    private let ackTimer = Metrics.Timer(label: "smarthost_kafka_produce_ack_seconds", preferredDisplayUnit: .seconds)
    private let inFlightGauge = Gauge(label: "smarthost_kafka_producer_in_flight")
    /// Made once: a lookup in the metrics registry per record showed in the profile.
    private let acknowledged = Counter(label: "smarthost_kafka_produced_total", dimensions: [("result", Outcome.acknowledged.rawValue)])

    public init(configuration: KafkaProducerConfiguration, logger: Logger = Logger(label: "smarthost.kafka.producer")) throws(KafkaError) {
        self.configuration = configuration
        self.logger = logger
        self.hardDeadline = configuration.deliveryTimeout + .seconds(2)
        let first = Generation(number: 1, handle: try Self.makeClient(configuration))
        state = Mutex(State(generation: first, liveGenerations: 1))
        startPolling(first)
    }

    private static func makeClient(_ configuration: KafkaProducerConfiguration) throws(KafkaError) -> RdKafkaPointer {
        try RdKafkaClient.make(type: RD_KAFKA_PRODUCER, options: configuration.librdkafkaOptions,
                               events: RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_LOG | RD_KAFKA_EVENT_ERROR)
    }

    /// Sends `record` and returns where Kafka stored it, after Kafka acknowledged it with acks=all.
    public func send(_ record: OutgoingRecord) async throws -> DeliveryReport {
        if let error = refusal(of: record) { throw error }
        let started = ContinuousClock.now
        try await acquireSlot()
        if ContinuousClock.now - started > configuration.deliveryTimeout {
            releaseSlot()
            let error = KafkaError.deliveryTimedOut(topic: record.topic, after: configuration.deliveryTimeout, outcomeUnknown: false)
            Self.count(.timedOut, error)
            throw error
        }
        return try await withCheckedThrowingContinuation { continuation in
            start(record, started: started) { continuation.resume(with: $0) }
        }
    }

    /// `send` without a task: `completion` gets its outcome on the producer's polling thread
    /// (or at once, on the caller's, when the record is refused), so it must only hand the
    /// outcome on. An ingress node answers its client this way, from the delivery report
    /// straight to the connection's event loop, instead of through two hops of Swift's
    /// cooperative pool per message. When every in-flight slot is taken it waits in a task.
    public func send(_ record: OutgoingRecord, completion: @escaping @Sendable (Result<DeliveryReport, any Error>) -> Void) {
        if let error = refusal(of: record) { return completion(.failure(error)) }
        switch takeSlot(orWait: nil) {
        case .go:
            start(record, started: ContinuousClock.now, completion: completion)
        case .closed:
            completion(.failure(KafkaError.closed))
        case .wait:
            Task {
                do { completion(.success(try await self.send(record))) } catch { completion(.failure(error)) }
            }
        }
    }

    /// Why `record` cannot be sent at all, if it cannot.
    private func refusal(of record: OutgoingRecord) -> KafkaError? {
        do throws(KafkaError) {
            try TopicName.validate(record.topic)
        } catch {
            return error
        }
        guard record.size <= configuration.maxRecordSize else {
            let error = KafkaError.recordTooLarge(size: record.size, limit: configuration.maxRecordSize)
            Self.count(.rejected, error)
            return error
        }
        if let bad = record.headers.first(where: { $0.name.isEmpty || $0.name.utf8.contains(0) }) {
            return KafkaError.invalidHeaderName(bad.name)
        }
        return nil
    }

    /// Produces a record that holds a slot; `completion` gets the delivery report's outcome.
    private func start(_ record: OutgoingRecord, started: ContinuousClock.Instant, completion: @escaping Completion) {
        // Register before producing: the delivery report can arrive before produceva returns.
        let chosen = state.withLock { state -> (UInt, Generation)? in
            guard !state.finished.contains(state.generation.number) else { return nil }
            let id = state.nextID
            state.nextID += 1
            state.pending[id] = Pending(completion: completion, topic: record.topic, started: started)
            state.deadlines.append((id, started + hardDeadline))
            state.producing[state.generation.number, default: 0] += 1
            return (id, state.generation)
        }
        guard let (id, generation) = chosen else {
            releaseSlot()
            completion(.failure(KafkaError.closed))
            return
        }
        let error = produce(record, id: id, on: generation)
        state.withLock { $0.producing[generation.number]! -= 1 }
        if let error {
            let waiting = state.withLock { $0.pending.removeValue(forKey: id)?.completion }
            releaseSlot()
            Self.count(.rejected, error)
            waiting?(.failure(error))
        }
    }

    /// Waits until every record sent so far is acknowledged or failed, at most `timeout`.
    /// Returns false if records were still outstanding when the time ran out.
    @discardableResult
    public func flush(timeout: Duration) async -> Bool {
        let drained: Bool = await withTaskGroup(of: Bool.self) { group in
            group.addTask { [self] in
                await withCheckedContinuation { continuation in
                    let done = state.withLock { state -> Bool in
                        if state.inFlight == 0 { return true }
                        state.drainWaiters.append(continuation)
                        return false
                    }
                    if done { continuation.resume() }
                }
                // Another flush that timed out wakes every waiter: say what is true now.
                return state.withLock { $0.inFlight == 0 }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next()!
            group.cancelAll()
            if !first { wakeDrainWaiters() }
            return first
        }
        return drained
    }

    /// Stops taking records, flushes what is outstanding (at most `timeout`), stops the polling
    /// thread and destroys the client. Records still unacknowledged fail with an unknown outcome.
    public func close(timeout: Duration = .seconds(10)) async {
        let alreadyClosing = state.withLock { state -> Bool in
            defer { state.closing = true }
            return state.closing
        }
        let waiters = state.withLock { state -> Deque<CheckedContinuation<Void, any Error>> in
            defer { state.slotWaiters.removeAll() }
            return state.slotWaiters
        }
        for waiter in waiters { waiter.resume(throwing: KafkaError.closed) }
        if !alreadyClosing {
            let flushed = await flush(timeout: timeout)
            if !flushed { logger.warning("closing the producer with records still unacknowledged") }
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let current = state.withLock { state -> Generation? in
                if state.liveGenerations == 0 { return nil }
                state.stopWaiters.append(continuation)
                return state.generation
            }
            if let current { current.retired.store(true, ordering: .releasing) } else { continuation.resume() }
        }
    }

    /// ServiceLifecycle: runs until a graceful shutdown (SIGTERM), then flushes and closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await close(timeout: configuration.deliveryTimeout)
    }

    // MARK: - Producing

    private func produce(_ record: OutgoingRecord, id: UInt, on generation: Generation) -> KafkaError? {
        // The topic, the key and the headers in one buffer for this call (librdkafka copies
        // them: RD_KAFKA_MSG_F_COPY, and headers always): one allocation per record instead
        // of two per header.
        let size = record.topic.utf8.count + 1 + (record.key?.count ?? 0)
            + record.headers.reduce(0) { $0 + $1.name.utf8.count + 1 + $1.value.count }
        let arena = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 1)
        defer { arena.deallocate() }
        var used = 0
        func place(_ bytes: some Collection<UInt8>, terminated: Bool) -> UnsafeMutableRawPointer {
            let start = arena.baseAddress! + used
            UnsafeMutableRawBufferPointer(start: start, count: bytes.count).copyBytes(from: bytes)
            used += bytes.count
            if terminated {
                arena[used] = 0
                used += 1
            }
            return start
        }

        var vus: [rd_kafka_vu_t] = []
        vus.reserveCapacity(5 + record.headers.count)
        let topic = place(record.topic.utf8, terminated: true)
        vus.append(Self.vu(RD_KAFKA_VTYPE_TOPIC) { $0.cstr = UnsafePointer(topic.assumingMemoryBound(to: CChar.self)) })
        vus.append(Self.vu(RD_KAFKA_VTYPE_MSGFLAGS) { $0.i = RD_KAFKA_MSG_F_COPY })
        vus.append(Self.vu(RD_KAFKA_VTYPE_OPAQUE) { $0.ptr = UnsafeMutableRawPointer(bitPattern: id) })
        if let key = record.key {
            let placed = place(key, terminated: false)
            vus.append(Self.vu(RD_KAFKA_VTYPE_KEY) { $0.mem = .init(ptr: placed, size: key.count) })
        }
        for header in record.headers {
            let name = place(header.name.utf8, terminated: true).assumingMemoryBound(to: CChar.self)
            let value = place(header.value, terminated: false)
            vus.append(Self.vu(RD_KAFKA_VTYPE_HEADER) {
                $0.header = .init(name: name, val: value, size: header.value.count)
            })
        }
        let error: OpaquePointer? = record.value.withUnsafeBytes { value in
            vus.append(Self.vu(RD_KAFKA_VTYPE_VALUE) {
                $0.mem = .init(ptr: UnsafeMutableRawPointer(mutating: value.baseAddress), size: value.count)
            })
            return rd_kafka_produceva(generation.handle.raw, vus, vus.count)
        }
        guard let error else { return nil }
        defer { rd_kafka_error_destroy(error) }
        let code = rd_kafka_error_code(error)
        let reason = String(cString: rd_kafka_error_string(error))
        if code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE {
            return .recordTooLarge(size: record.size, limit: configuration.maxRecordSize)
        }
        return .deliveryFailed(topic: record.topic, code: code.rawValue, reason: reason)
    }

    private static func vu(_ type: rd_kafka_vtype_t, _ set: (inout rd_kafka_vu_t.__Unnamed_union_u) -> Void) -> rd_kafka_vu_t {
        var vu = rd_kafka_vu_t()
        vu.vtype = type
        set(&vu.u)
        return vu
    }

    // MARK: - In-flight bound

    private func acquireSlot() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            switch takeSlot(orWait: continuation) {
            case .go: continuation.resume()
            case .closed: continuation.resume(throwing: KafkaError.closed)
            case .wait: break
            }
        }
    }

    private enum SlotDecision { case go, wait, closed }

    /// Takes a free slot, or queues `waiter` (if any) for the next one freed.
    private func takeSlot(orWait waiter: CheckedContinuation<Void, any Error>?) -> SlotDecision {
        state.withLock { state -> SlotDecision in
            if state.closing { return .closed }
            if state.inFlight < configuration.maxInFlight {
                state.inFlight += 1
                inFlightGauge.record(state.inFlight)
                return .go
            }
            if let waiter { state.slotWaiters.append(waiter) }
            return .wait
        }
    }

    /// Gives a slot to the next waiter, or frees it.
    private func releaseSlot() {
        let (waiter, drained) = state.withLock { state -> (CheckedContinuation<Void, any Error>?, [CheckedContinuation<Void, Never>]) in
            if let waiter = state.slotWaiters.popFirst() { return (waiter, []) }
            state.inFlight -= 1
            inFlightGauge.record(state.inFlight)
            guard state.inFlight == 0 else { return (nil, []) }
            defer { state.drainWaiters.removeAll() }
            return (nil, state.drainWaiters)
        }
        waiter?.resume()
        drained.forEach { $0.resume() }
    }

    private func wakeDrainWaiters() {
        let waiters = state.withLock { state in
            defer { state.drainWaiters.removeAll() }
            return state.drainWaiters
        }
        waiters.forEach { $0.resume() }
    }

    // MARK: - Polling threads

    private func startPolling(_ generation: Generation) {
        startThread("kafka-producer-\(generation.number)") { [self] in pollLoop(generation) }
    }

    /// Serves one generation's delivery reports and logs until it is retired and drained
    /// (or, if it was replaced, until the delivery timeout has passed), then destroys it.
    private func pollLoop(_ generation: Generation) {
        var retiredAt: ContinuousClock.Instant?
        while true {
            if let event = rd_kafka_queue_poll(generation.queue.raw, 100) {
                handle(event, from: generation)
                rd_kafka_event_destroy(event)
            }
            abandonOverdue(now: .now)
            guard generation.retired.load(ordering: .acquiring) else { continue }
            let now = ContinuousClock.now
            retiredAt = retiredAt ?? now
            let done = state.withLock { state -> Bool in
                guard state.producing[generation.number, default: 0] == 0,
                      rd_kafka_outq_len(generation.handle.raw) == 0 || now - retiredAt! > hardDeadline else { return false }
                state.finished.insert(generation.number)
                return true
            }
            if done { break }
        }
        // Anything still queued in this client fails now, through the delivery reports.
        rd_kafka_purge(generation.handle.raw, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
        while let event = rd_kafka_queue_poll(generation.queue.raw, 0) {
            handle(event, from: generation)
            rd_kafka_event_destroy(event)
        }
        rd_kafka_queue_destroy(generation.queue.raw)
        rd_kafka_destroy(generation.handle.raw)
        let (orphans, stopWaiters) = state.withLock { state in
            state.liveGenerations -= 1
            guard state.liveGenerations == 0 else {
                return ([(Completion, String)](), [CheckedContinuation<Void, Never>]())
            }
            // Whatever librdkafka never reported on is unknown: it may or may not be in Kafka.
            defer {
                state.pending.removeAll()
                state.stopWaiters.removeAll()
            }
            return (state.pending.values.compactMap { pending in pending.completion.map { ($0, pending.topic) } }, state.stopWaiters)
        }
        for (completion, topic) in orphans {
            completion(.failure(KafkaError.deliveryTimedOut(topic: topic, after: configuration.deliveryTimeout, outcomeUnknown: true)))
        }
        stopWaiters.forEach { $0.resume() }
    }

    /// Replaces a fenced or fatally failed client with a new one, once per generation.
    private func replace(_ failed: Generation, reason: String) {
        let next = state.withLock { state -> Generation? in
            guard state.generation === failed, !state.closing else { return nil }
            guard let handle = try? Self.makeClient(configuration) else { return nil }
            state.generation = Generation(number: failed.number + 1, handle: handle)
            state.liveGenerations += 1
            return state.generation
        }
        guard let next else { return }
        logger.warning("replacing the Kafka producer client: \(reason)", metadata: ["generation": "\(next.number)"])
        Counter(label: "smarthost_kafka_producer_replaced_total").increment()
        failed.retired.store(true, ordering: .releasing)
        startPolling(next)
    }

    private func handle(_ event: OpaquePointer, from generation: Generation) {
        guard rd_kafka_event_type(event) == RD_KAFKA_EVENT_DR else {
            if rd_kafka_event_type(event) == RD_KAFKA_EVENT_ERROR, rd_kafka_event_error_is_fatal(event) != 0 {
                replace(generation, reason: String(cString: rd_kafka_event_error_string(event)))
            }
            _ = LogBridge.handle(event, role: .producer, logger: logger)
            return
        }
        while let message = rd_kafka_event_message_next(event) {
            let id = UInt(bitPattern: message.pointee._private)
            let topic = String(cString: rd_kafka_topic_name(message.pointee.rkt))
            let result: Result<DeliveryReport, KafkaError>
            switch message.pointee.err {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                result = .success(DeliveryReport(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset))
            case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
                result = .failure(.deliveryTimedOut(topic: topic, after: configuration.deliveryTimeout, outcomeUnknown: false))
            case let code:
                if Self.fencingErrors.contains(code) {
                    replace(generation, reason: KafkaError.errorName(code))
                }
                result = .failure(.deliveryFailed(topic: topic, code: code.rawValue, reason: KafkaError.errorName(code)))
            }
            complete(id: id, result: result)
        }
    }

    private func complete(id: UInt, result: Result<DeliveryReport, KafkaError>) {
        let pending = state.withLock { $0.pending.removeValue(forKey: id) }
        releaseSlot()
        guard let pending, let completion = pending.completion else { return }  // caller gave up already
        ackTimer.recordNanoseconds((ContinuousClock.now - pending.started).nanoseconds)
        switch result {
        case .success: acknowledged.increment()
        case .failure(let error):
            if case .deliveryTimedOut = error { Self.count(.timedOut, error) } else { Self.count(.failed, error) }
        }
        completion(result.mapError { $0 as any Error })
    }

    /// Fails callers whose record librdkafka has not reported on by the hard deadline.
    private func abandonOverdue(now: ContinuousClock.Instant) {
        let overdue = state.withLock { state -> [(Completion, String)] in
            var overdue: [(Completion, String)] = []
            while let first = state.deadlines.first, first.deadline <= now {
                state.deadlines.removeFirst()
                if let completion = state.pending[first.id]?.completion {
                    state.pending[first.id]?.completion = nil
                    overdue.append((completion, state.pending[first.id]!.topic))
                }
            }
            return overdue
        }
        for (completion, topic) in overdue {
            let error = KafkaError.deliveryTimedOut(topic: topic, after: configuration.deliveryTimeout, outcomeUnknown: true)
            Self.count(.timedOut, error)
            completion(.failure(error))
        }
    }

    /// Errors after which this producer id cannot write again: only a new client helps.
    private static let fencingErrors: Set<rd_kafka_resp_err_t> = [
        RD_KAFKA_RESP_ERR_PRODUCER_FENCED, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH, RD_KAFKA_RESP_ERR__FATAL,
    ]

    private enum Outcome: String { case acknowledged, timedOut = "timed_out", failed, rejected }

    /// Counts a record's outcome, and the error of one that was not acknowledged.
    private static func count(_ outcome: Outcome, _ error: KafkaError? = nil) {
        Counter(label: "smarthost_kafka_produced_total", dimensions: [("result", outcome.rawValue)]).increment()
        if let error { KafkaMetrics.countProduceError(error) }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
