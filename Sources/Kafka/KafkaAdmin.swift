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
        let result: Result<[TopicDescription], KafkaError> = await runBlocking("kafka-admin") {
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
        return try result.get()
    }
}
