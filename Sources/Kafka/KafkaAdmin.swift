import CRdKafka
import Logging

/// What the broker knows about a topic.
public struct TopicDescription: Sendable, Equatable {
    public var name: String
    public var partitions: Int

    public init(name: String, partitions: Int) {
        self.name = name
        self.partitions = partitions
    }
}

/// Topic creation and inspection, for setup, the local cluster and tests.
public final class KafkaAdmin: Sendable {
    private let handle: RdKafkaPointer
    private let timeout: Duration

    public init(bootstrapServers: [String], timeout: Duration = .seconds(10)) throws(KafkaError) {
        self.timeout = timeout
        handle = try RdKafkaClient.make(
            type: RD_KAFKA_PRODUCER,
            options: RdKafkaClient.commonOptions(bootstrapServers: bootstrapServers, clientID: "smarthost-admin"),
            events: RD_KAFKA_EVENT_LOG | RD_KAFKA_EVENT_ERROR)
    }

    deinit {
        rd_kafka_destroy(handle.raw)
    }

    /// Creates `name` with `partitions` partitions; succeeds if it already exists.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) async throws {
        try TopicName.validate(name)
        let handle = self.handle
        let timeout = self.timeout
        let result: Result<Void, KafkaError> = await runBlocking("kafka-admin") {
            var errstr = [CChar](repeating: 0, count: 512)
            guard let topic = rd_kafka_NewTopic_new(name, Int32(partitions), Int32(replicationFactor), &errstr, errstr.count) else {
                return .failure(.operationFailed(operation: "create topic \(name)", code: -1, reason: errorText(errstr)))
            }
            defer { rd_kafka_NewTopic_destroy(topic) }
            let queue = rd_kafka_queue_new(handle.raw)!
            defer { rd_kafka_queue_destroy(queue) }
            var topics: [OpaquePointer?] = [topic]
            rd_kafka_CreateTopics(handle.raw, &topics, 1, nil, queue)
            guard let event = rd_kafka_queue_poll(queue, Int32(timeout.milliseconds)) else {
                return .failure(.operationFailed(operation: "create topic \(name)", code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue, reason: "no answer within \(timeout)"))
            }
            defer { rd_kafka_event_destroy(event) }
            if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
                return .failure(.operationFailed(operation: "create topic \(name)", code: rd_kafka_event_error(event).rawValue,
                                                 reason: String(cString: rd_kafka_event_error_string(event))))
            }
            var count = 0
            let results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count)
            for index in 0..<count {
                let code = rd_kafka_topic_result_error(results![index])
                if code != RD_KAFKA_RESP_ERR_NO_ERROR && code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS {
                    let reason = rd_kafka_topic_result_error_string(results![index]).map { String(cString: $0) } ?? KafkaError.errorName(code)
                    return .failure(.operationFailed(operation: "create topic \(name)", code: code.rawValue, reason: reason))
                }
            }
            return .success(())
        }
        try result.get()
    }

    /// The topics the broker knows, with their partition counts.
    public func topics() async throws -> [TopicDescription] {
        let handle = self.handle
        let timeout = self.timeout
        return try await runBlocking("kafka-admin") { Self.topics(handle, timeout) }.get()
    }

    private static func topics(_ handle: RdKafkaPointer, _ timeout: Duration) -> Result<[TopicDescription], KafkaError> {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let rc = rd_kafka_metadata(handle.raw, 1, nil, &metadata, Int32(timeout.milliseconds))
        guard rc == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
            return .failure(.operationFailed(operation: "metadata", code: rc.rawValue, reason: KafkaError.errorName(rc)))
        }
        defer { rd_kafka_metadata_destroy(metadata) }
        let topics = (0..<Int(metadata.pointee.topic_cnt)).map { index in
            let topic = metadata.pointee.topics[index]
            return TopicDescription(name: String(cString: topic.topic), partitions: Int(topic.partition_cnt))
        }
        return .success(topics.sorted { $0.name < $1.name })
    }

    /// The offset `group` committed in each partition of the topics named `<prefix>…`
    /// (nil where it committed none): everything below it, that group's consumers are done with.
    public func committedOffsets(group: String, topicsWithPrefix prefix: String) async throws -> [TopicPartition: Int64?] {
        let handle = self.handle
        let timeout = self.timeout
        return try await runBlocking("kafka-admin") { () -> Result<[TopicPartition: Int64?], KafkaError> in
            let operation = "committed offsets of \(group)"
            let topics: [TopicDescription]
            switch Self.topics(handle, timeout) {
            case .success(let all): topics = all.filter { $0.name.hasPrefix(prefix) }
            case .failure(let error): return .failure(error)
            }
            guard !topics.isEmpty else { return .success([:]) }
            let list = rd_kafka_topic_partition_list_new(Int32(topics.reduce(0) { $0 + $1.partitions }))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for topic in topics {
                for partition in 0..<topic.partitions { rd_kafka_topic_partition_list_add(list, topic.name, Int32(partition)) }
            }
            let request = rd_kafka_ListConsumerGroupOffsets_new(group, list)
            let queue = rd_kafka_queue_new(handle.raw)!
            defer { rd_kafka_queue_destroy(queue) }
            var requests: [OpaquePointer?] = [request]
            rd_kafka_ListConsumerGroupOffsets(handle.raw, &requests, 1, nil, queue)
            rd_kafka_ListConsumerGroupOffsets_destroy(request)
            guard let event = rd_kafka_queue_poll(queue, Int32(timeout.milliseconds)) else {
                return .failure(.operationFailed(operation: operation, code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue, reason: "no answer within \(timeout)"))
            }
            defer { rd_kafka_event_destroy(event) }
            if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
                return .failure(.operationFailed(operation: operation, code: rd_kafka_event_error(event).rawValue,
                                                 reason: String(cString: rd_kafka_event_error_string(event))))
            }
            var count = 0
            guard let groups = rd_kafka_ListConsumerGroupOffsets_result_groups(rd_kafka_event_ListConsumerGroupOffsets_result(event), &count),
                  count == 1, let result = groups[0] else {
                return .failure(.operationFailed(operation: operation, code: -1, reason: "no result for the group"))
            }
            if let error = rd_kafka_group_result_error(result) {
                return .failure(.operationFailed(operation: operation, code: rd_kafka_error_code(error).rawValue,
                                                 reason: String(cString: rd_kafka_error_string(error))))
            }
            var offsets: [TopicPartition: Int64?] = [:]
            if let partitions = rd_kafka_group_result_partitions(result) {
                for index in 0..<Int(partitions.pointee.cnt) {
                    let element = partitions.pointee.elems[index]
                    guard element.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
                    offsets[TopicPartition(topic: String(cString: element.topic), partition: element.partition)] = element.offset >= 0 ? element.offset : nil
                }
            }
            return .success(offsets)
        }.get()
    }

    /// Each partition's oldest offset still held (its low watermark).
    public func lowWatermarks(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        let handle = self.handle
        let timeout = self.timeout
        return try await runBlocking("kafka-admin") { () -> Result<[TopicPartition: Int64], KafkaError> in
            var lows: [TopicPartition: Int64] = [:]
            for partition in partitions {
                var low: Int64 = 0
                var high: Int64 = 0
                let rc = rd_kafka_query_watermark_offsets(handle.raw, partition.topic, partition.partition, &low, &high, Int32(timeout.milliseconds))
                guard rc == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    return .failure(.operationFailed(operation: "watermarks of \(partition)", code: rc.rawValue, reason: KafkaError.errorName(rc)))
                }
                lows[partition] = low
            }
            return .success(lows)
        }.get()
    }
}
