import CRdKafka
import DequeModule
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Settings of a group consumer; `KafkaConsumer` derives librdkafka's options from them.
public struct KafkaConsumerConfiguration: Sendable {
    public var bootstrapServers: [String]
    public var groupID: String
    /// Topic names, or regular expressions starting with `^` (`^smarthost\..*` follows new tenant topics).
    public var topics: [String]
    public var clientID = "smarthost"
    /// How long the group waits for a silent member before giving its partitions to others.
    public var sessionTimeout: Duration = .seconds(10)
    /// How often topic metadata is refreshed, which is how a regex subscription sees new topics.
    public var metadataRefresh: Duration = .seconds(30)
    /// Records read ahead of the caller; beyond it the consumer pauses its partitions.
    public var bufferCapacity = 1_000
    /// How often offsets of records marked done are committed (also on revoke and close).
    /// Short, because what is done and not yet committed is what a new owner reads again when
    /// this member dies: a delivery node killed with a second of spooled records uncommitted
    /// had them delivered twice (docs/reliability.md). Nothing is sent while nothing moved.
    public var commitInterval: Duration = .milliseconds(100)
    /// The largest record the consumer must be able to fetch.
    public var maxRecordSize = 32 * 1024 * 1024
    /// Passed to librdkafka as they are (security.protocol, sasl.*, ...).
    public var extraOptions: [String: String] = [:]

    public init(bootstrapServers: [String], groupID: String, topics: [String]) {
        self.bootstrapServers = bootstrapServers
        self.groupID = groupID
        self.topics = topics
    }

    var librdkafkaOptions: [(String, String)] {
        let session = max(sessionTimeout.milliseconds, 1000)
        let fetchMax = max(52_428_800, maxRecordSize + 1_048_576)
        var options = RdKafkaClient.commonOptions(bootstrapServers: bootstrapServers, clientID: clientID) + [
            ("group.id", groupID),
            // At-least-once: only offsets of records the caller marked done are ever committed.
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "\(session)"),
            ("heartbeat.interval.ms", "\(max(session / 3, 100))"),
            ("topic.metadata.refresh.interval.ms", "\(max(metadataRefresh.milliseconds, 100))"),
            ("fetch.max.bytes", "\(fetchMax)"),
            ("receive.message.max.bytes", "\(fetchMax + 1_048_576)"),
        ]
        options += extraOptions.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return options
    }
}

/// A consumer-group member with at-least-once semantics: it commits an offset only once every
/// record below it was marked done by the caller, commits what is done when partitions are
/// revoked or the consumer closes, and pauses fetching while its read-ahead buffer is full.
///
/// All librdkafka calls happen on one dedicated thread that serves the consumer queue
/// (records, rebalances, logs) and carries out requests from callers.
public final class KafkaConsumer: Sendable, Service {
    private struct State {
        var buffer: Deque<ConsumedRecord> = []
        var tracker = OffsetTracker()
        var assignment: Set<TopicPartition> = []
        var waiter: CheckedContinuation<Void, Never>?
        var pausedByCaller = false
        var pausedForBuffer = false
        var commitWaiters: [CheckedContinuation<Void, any Error>] = []
        var closeRequested = false
        var closed = false
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        /// Offset gaps fetched again, by partition and first skipped offset, and how often.
        var refetchedGaps: [TopicPartition: (from: Int64, times: Int)] = [:]
    }

    /// A gap in a fetch answer is fetched again this many times before it is accepted: Tansu
    /// can answer with a later record while an earlier one is not yet visible (docs/kafka.md).
    static let gapRefetches = 3

    public let configuration: KafkaConsumerConfiguration
    private let handle: RdKafkaPointer
    private let queue: RdKafkaPointer
    private let state = Mutex(State())
    private let logger: Logger
    private let bufferGauge = Gauge(label: "smarthost_kafka_consumer_buffered")
    private let consumedCounter = Counter(label: "smarthost_kafka_consumed_total")
    private let gapCounter = Counter(label: "smarthost_kafka_consumer_offset_gaps_total")
    private let lagGauge = Gauge(label: "smarthost_kafka_consumer_lag")

    public init(configuration: KafkaConsumerConfiguration, logger: Logger = Logger(label: "smarthost.kafka.consumer")) throws(KafkaError) {
        for topic in configuration.topics where !topic.hasPrefix("^") {
            try TopicName.validate(topic)
        }
        self.configuration = configuration
        self.logger = logger
        handle = try RdKafkaClient.make(
            type: RD_KAFKA_CONSUMER, options: configuration.librdkafkaOptions,
            events: RD_KAFKA_EVENT_FETCH | RD_KAFKA_EVENT_REBALANCE | RD_KAFKA_EVENT_LOG | RD_KAFKA_EVENT_ERROR)
        // One queue for everything: records, rebalances and logs, served by our thread.
        rd_kafka_poll_set_consumer(handle.raw)
        queue = RdKafkaPointer(raw: rd_kafka_queue_get_consumer(handle.raw))
        rd_kafka_set_log_queue(handle.raw, queue.raw)

        let list = Self.partitionList(configuration.topics.map { TopicPartition(topic: $0, partition: RD_KAFKA_PARTITION_UA) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let rc = rd_kafka_subscribe(handle.raw, list)
        guard rc == RD_KAFKA_RESP_ERR_NO_ERROR else {
            rd_kafka_queue_destroy(queue.raw)
            rd_kafka_destroy(handle.raw)
            throw .operationFailed(operation: "subscribe", code: rc.rawValue, reason: KafkaError.errorName(rc))
        }
        startThread("kafka-consumer-poll") { [self] in pollLoop() }
    }

    // MARK: - Reading

    /// Waits for records and returns up to `max` of them, in order per partition; an empty
    /// array means the consumer was closed (or the task cancelled).
    public func nextBatch(max: Int) async -> [ConsumedRecord] {
        while true {
            let (batch, finished, wakeThread) = state.withLock { state -> ([ConsumedRecord], Bool, Bool) in
                let count = min(Swift.max(max, 1), state.buffer.count)
                let batch = Array(state.buffer.prefix(count))
                state.buffer.removeFirst(count)
                // Resume fetching once the caller has worked the buffer down to half.
                let wake = state.pausedForBuffer && state.buffer.count <= configuration.bufferCapacity / 2
                return (batch, state.closed, wake)
            }
            if wakeThread { rd_kafka_queue_yield(queue.raw) }
            if !batch.isEmpty || finished || Task.isCancelled {
                bufferGauge.record(state.withLock { $0.buffer.count })
                return batch
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { state -> Bool in
                        if !state.buffer.isEmpty || state.closed { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            } onCancel: {
                state.withLock { state in
                    defer { state.waiter = nil }
                    return state.waiter
                }?.resume()
            }
        }
    }

    /// Marks a record durably handled; its offset becomes committable once every record below
    /// it in its partition is done too. Returns false for a record of a partition this consumer
    /// no longer owns (it will be delivered again to the new owner).
    @discardableResult
    public func markDone(_ record: ConsumedRecord) -> Bool {
        state.withLock { $0.tracker.markDone(record.topicPartition, offset: record.offset) }
    }

    /// Commits, synchronously with the group coordinator, every offset made committable so far.
    public func commit() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let closed = state.withLock { state -> Bool in
                if state.closed || state.closeRequested { return true }
                state.commitWaiters.append(continuation)
                return false
            }
            if closed { continuation.resume(throwing: KafkaError.closed) } else { rd_kafka_queue_yield(queue.raw) }
        }
    }

    /// Stops fetching (for example while the spool is full); records already buffered stay.
    public func pause() { setPausedByCaller(true) }
    public func resume() { setPausedByCaller(false) }

    /// The partitions this member owns right now.
    public var assignment: Set<TopicPartition> { state.withLock { $0.assignment } }

    /// Commits what is done, leaves the group (so its partitions move at once, not after the
    /// session timeout) and destroys the client. Records not marked done will be read again.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closed = state.withLock { state -> Bool in
                if state.closed { return true }
                state.closeRequested = true
                state.closeWaiters.append(continuation)
                return false
            }
            if closed { continuation.resume() } else { rd_kafka_queue_yield(queue.raw) }
        }
    }

    /// ServiceLifecycle: runs until a graceful shutdown (SIGTERM), then closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    private func setPausedByCaller(_ paused: Bool) {
        state.withLock { $0.pausedByCaller = paused }
        rd_kafka_queue_yield(queue.raw)
    }

    // MARK: - The polling thread

    private func pollLoop() {
        var lastCommit = ContinuousClock.now
        var fetchingPaused = false
        while !state.withLock({ $0.closeRequested }) {
            if let event = rd_kafka_queue_poll(queue.raw, 100) {
                handle(event, closing: false)
                rd_kafka_event_destroy(event)
            }
            let (wantPaused, commitWaiters) = state.withLock { state in
                if state.buffer.count >= configuration.bufferCapacity { state.pausedForBuffer = true }
                if state.buffer.count <= configuration.bufferCapacity / 2 { state.pausedForBuffer = false }
                defer { state.commitWaiters.removeAll() }
                return (state.pausedByCaller || state.pausedForBuffer, state.commitWaiters)
            }
            if wantPaused != fetchingPaused {
                setFetching(paused: wantPaused, partitions: state.withLock { $0.assignment })
                fetchingPaused = wantPaused
            }
            if !commitWaiters.isEmpty || ContinuousClock.now - lastCommit >= configuration.commitInterval {
                let result = commitDone(only: nil)
                commitWaiters.forEach { $0.resume(with: result) }
                lastCommit = .now
                recordLag()
            }
        }
        shutDown()
    }

    private func shutDown() {
        _ = commitDone(only: nil)
        if let error = rd_kafka_consumer_close_queue(handle.raw, queue.raw) {
            logger.warning("closing the consumer: \(String(cString: rd_kafka_error_string(error)))")
            rd_kafka_error_destroy(error)
        }
        // Serve the final revoke (which commits what is done) until the group has let us go.
        while rd_kafka_consumer_closed(handle.raw) == 0 {
            if let event = rd_kafka_queue_poll(queue.raw, 100) {
                handle(event, closing: true)
                rd_kafka_event_destroy(event)
            }
        }
        rd_kafka_queue_destroy(queue.raw)
        rd_kafka_destroy(handle.raw)
        let (waiter, closeWaiters, commitWaiters) = state.withLock { state in
            state.closed = true
            state.buffer.removeAll()
            defer { state.waiter = nil; state.closeWaiters.removeAll(); state.commitWaiters.removeAll() }
            return (state.waiter, state.closeWaiters, state.commitWaiters)
        }
        waiter?.resume()
        commitWaiters.forEach { $0.resume(throwing: KafkaError.closed) }
        closeWaiters.forEach { $0.resume() }
    }

    private func handle(_ event: OpaquePointer, closing: Bool) {
        switch rd_kafka_event_type(event) {
        case RD_KAFKA_EVENT_FETCH:
            guard !closing else { return }
            var records: [ConsumedRecord] = []
            while let message = rd_kafka_event_message_next(event) {
                if message.pointee.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    KafkaMetrics.countClientError(.consumer, message.pointee.err)
                    logger.warning("consumer error: \(String(cString: rd_kafka_message_errstr(message)))")
                    continue
                }
                records.append(Self.record(from: message))
            }
            let (waiter, gaps, refetch) = state.withLock { state in
                var gaps: [(TopicPartition, Range<Int64>)] = []
                var refetch: [TopicPartition: Int64] = [:]
                for record in records where state.assignment.contains(record.topicPartition) && refetch[record.topicPartition] == nil {
                    let partition = record.topicPartition
                    if let skipped = state.tracker.gap(before: record.offset, in: partition) {
                        let times = state.refetchedGaps[partition].map { $0.from == skipped.lowerBound ? $0.times : 0 } ?? 0
                        if times < Self.gapRefetches {
                            // Drop this record and the rest of its partition in this answer; fetch from the gap again.
                            state.refetchedGaps[partition] = (skipped.lowerBound, times + 1)
                            refetch[partition] = skipped.lowerBound
                            continue
                        }
                        gaps.append((partition, skipped))
                    }
                    state.refetchedGaps[partition] = nil
                    state.tracker.handedOut(partition, offset: record.offset)
                    state.buffer.append(record)
                }
                defer { state.waiter = nil }
                return (state.waiter, gaps, refetch)
            }
            if !refetch.isEmpty { seek(refetch) }
            for (partition, skipped) in gaps {
                gapCounter.increment(by: Int(skipped.count))
                logger.error("offsets skipped by the broker's fetch answer, still after fetching them again: records never delivered to this consumer",
                             metadata: ["partition": "\(partition)", "from": "\(skipped.lowerBound)", "to": "\(skipped.upperBound - 1)"])
            }
            consumedCounter.increment(by: records.count)
            waiter?.resume()
        case RD_KAFKA_EVENT_REBALANCE:
            rebalance(event)
        default:
            _ = LogBridge.handle(event, role: .consumer, logger: logger)
        }
    }

    private func rebalance(_ event: OpaquePointer) {
        let list = rd_kafka_event_topic_partition_list(event)!
        let partitions = Self.partitions(in: list)
        let cooperative = String(cString: rd_kafka_rebalance_protocol(handle.raw)) == "COOPERATIVE"
        switch rd_kafka_event_error(event) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            logger.info("assigned \(partitions.map(\.description).joined(separator: ", "))")
            let starts = startingOffsets(list)
            state.withLock { state in
                for (partition, offset) in starts { state.tracker.expect(partition, from: offset) }
            }
            if cooperative {
                rd_kafka_incremental_assign(handle.raw, list).map { rd_kafka_error_destroy($0) }
            } else {
                rd_kafka_assign(handle.raw, list)
            }
            let paused = state.withLock { state in
                state.assignment.formUnion(partitions)
                return state.pausedByCaller || state.pausedForBuffer
            }
            if paused { setFetching(paused: true, partitions: Set(partitions)) }
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            logger.info("revoked \(partitions.map(\.description).joined(separator: ", "))")
            // Commit what is done before the partitions move; records still buffered or in the
            // caller's hands are left uncommitted, so the new owner reads them again.
            _ = commitDone(only: Set(partitions))
            state.withLock { state in
                state.tracker.forget(partitions)
                state.assignment.subtract(partitions)
                state.buffer.removeAll { partitions.contains($0.topicPartition) }
            }
            if cooperative {
                rd_kafka_incremental_unassign(handle.raw, list).map { rd_kafka_error_destroy($0) }
            } else {
                rd_kafka_assign(handle.raw, nil)
            }
        case let code:
            KafkaMetrics.countClientError(.consumer, code)
            logger.error("rebalance error: \(KafkaError.errorName(code))")
            if !cooperative { rd_kafka_assign(handle.raw, nil) }
            state.withLock { state in
                state.tracker.forget(state.assignment)
                state.assignment.removeAll()
                state.buffer.removeAll()
            }
        }
    }

    /// Synchronously commits the committable offsets (of `only` these partitions, if given).
    private func commitDone(only: Set<TopicPartition>?) -> Result<Void, any Error> {
        var offsets = state.withLock { $0.tracker.committable() }
        if let only { offsets = offsets.filter { only.contains($0.key) } }
        guard !offsets.isEmpty else { return .success(()) }
        let list = Self.partitionList(offsets.keys.sorted())
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (index, partition) in Self.partitions(in: list).enumerated() {
            list.pointee.elems[index].offset = offsets[partition]!
        }
        let rc = rd_kafka_commit(handle.raw, list, 0)
        guard rc == RD_KAFKA_RESP_ERR_NO_ERROR || rc == RD_KAFKA_RESP_ERR__NO_OFFSET else {
            logger.warning("offset commit failed: \(KafkaError.errorName(rc))")
            Counter(label: "smarthost_kafka_commit_errors_total").increment()
            return .failure(KafkaError.operationFailed(operation: "offset commit", code: rc.rawValue, reason: KafkaError.errorName(rc)))
        }
        state.withLock { $0.tracker.markCommitted(offsets) }
        return .success(())
    }

    /// Records in the assigned partitions not yet done: per partition, the high watermark of
    /// the last fetch answer (librdkafka's cached value, no request) minus the next offset to
    /// commit. A partition nothing was handed out of since its assignment counts as caught up.
    private func recordLag() {
        let partitions = state.withLock { state in state.assignment.map { ($0, state.tracker.nextOffset($0)) } }
        var lag: Int64 = 0
        for case let (partition, next?) in partitions {
            var low: Int64 = 0
            var high: Int64 = 0
            guard rd_kafka_get_watermark_offsets(handle.raw, partition.topic, partition.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  high >= 0 else { continue }
            lag += max(0, high - next)
        }
        lagGauge.record(lag)
    }

    /// Where reading of newly assigned partitions starts: the group's committed offset, else
    /// (a new group, `auto.offset.reset=earliest`) the start of the log. A partition whose start
    /// cannot be learnt now is left out: its first fetch is then taken as its start.
    private func startingOffsets(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartition: Int64] {
        guard let copy = rd_kafka_topic_partition_list_copy(list) else { return [:] }
        defer { rd_kafka_topic_partition_list_destroy(copy) }
        let asked = rd_kafka_committed(handle.raw, copy, 5_000)
        guard asked == RD_KAFKA_RESP_ERR_NO_ERROR else {
            logger.warning("could not read the committed offsets of the assigned partitions: \(KafkaError.errorName(asked))")
            return [:]
        }
        var starts: [TopicPartition: Int64] = [:]
        for index in 0..<Int(copy.pointee.cnt) {
            let element = copy.pointee.elems[index]
            let partition = TopicPartition(topic: String(cString: element.topic), partition: element.partition)
            if element.err == RD_KAFKA_RESP_ERR_NO_ERROR, element.offset >= 0 {
                starts[partition] = element.offset
                continue
            }
            var low: Int64 = 0
            var high: Int64 = 0
            if rd_kafka_query_watermark_offsets(handle.raw, element.topic, element.partition, &low, &high, 5_000) == RD_KAFKA_RESP_ERR_NO_ERROR {
                starts[partition] = low
            }
        }
        return starts
    }

    /// Fetches the partitions again from the given offsets (records already fetched past them are dropped).
    private func seek(_ offsets: [TopicPartition: Int64]) {
        let partitions = offsets.keys.sorted()
        let list = Self.partitionList(partitions)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (index, partition) in partitions.enumerated() {
            list.pointee.elems[index].offset = offsets[partition]!
            logger.notice("offsets missing from a fetch answer: fetching again from the first of them",
                          metadata: ["partition": "\(partition)", "from": "\(offsets[partition]!)"])
        }
        if let error = rd_kafka_seek_partitions(handle.raw, list, 0) {
            logger.warning("seek failed: \(String(cString: rd_kafka_error_string(error)))")
            rd_kafka_error_destroy(error)
        }
    }

    private func setFetching(paused: Bool, partitions: Set<TopicPartition>) {
        guard !partitions.isEmpty else { return }
        let list = Self.partitionList(partitions.sorted())
        defer { rd_kafka_topic_partition_list_destroy(list) }
        if paused { rd_kafka_pause_partitions(handle.raw, list) } else { rd_kafka_resume_partitions(handle.raw, list) }
    }

    // MARK: - Conversions

    private static func partitionList(_ partitions: [TopicPartition]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        for partition in partitions {
            rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)
        }
        return list
    }

    private static func partitions(in list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartition] {
        (0..<Int(list.pointee.cnt)).map {
            TopicPartition(topic: String(cString: list.pointee.elems[$0].topic), partition: list.pointee.elems[$0].partition)
        }
    }

    private static func record(from message: UnsafePointer<rd_kafka_message_t>) -> ConsumedRecord {
        let m = message.pointee
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        var headers: [KafkaHeader] = []
        var list: OpaquePointer?
        if rd_kafka_message_headers(message, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list {
            var index = 0
            var name: UnsafePointer<CChar>?
            var bytes: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(list, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let value = bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: value))
                index += 1
            }
        }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &timestampType)
        return ConsumedRecord(
            topic: String(cString: rd_kafka_topic_name(m.rkt)), partition: m.partition, offset: m.offset,
            key: key, value: value, headers: headers,
            timestamp: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp)
    }
}
