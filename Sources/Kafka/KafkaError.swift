import CRdKafka

/// Everything that can go wrong talking to Kafka, as values a caller can switch on.
public enum KafkaError: Error, Equatable, CustomStringConvertible {
    /// The linked librdkafka is older than the project can use (see `LibraryVersion`).
    case libraryTooOld(linked: String, required: String)
    /// A configuration key or value librdkafka refused.
    case invalidConfiguration(key: String, reason: String)
    /// librdkafka could not create a client handle.
    case clientCreationFailed(String)
    /// A topic name Kafka would refuse: empty, too long, `.`/`..`, or characters outside [A-Za-z0-9._-].
    case invalidTopicName(String, reason: String)
    /// A record larger than the configured maximum; nothing was sent.
    case recordTooLarge(size: Int, limit: Int)
    /// A header name that is empty or not UTF-8 text.
    case invalidHeaderName(String)
    /// The record was not acknowledged within the delivery timeout. `outcomeUnknown` is true when
    /// librdkafka had not yet answered either: the record may still land, so callers that retry
    /// must treat it as a possible duplicate, never as a loss.
    case deliveryTimedOut(topic: String, after: Duration, outcomeUnknown: Bool)
    /// The broker or librdkafka refused the record.
    case deliveryFailed(topic: String, code: Int32, reason: String)
    /// The producer or consumer is closing or closed.
    case closed
    /// A blocking operation (metadata, topic creation, commit) failed.
    case operationFailed(operation: String, code: Int32, reason: String)
    /// librdkafka raised a fatal error; the client must be recreated.
    case fatal(code: Int32, reason: String)

    public var description: String {
        switch self {
        case .libraryTooOld(let linked, let required):
            return "librdkafka \(linked) is linked, but \(required) or newer is required: older versions cannot parse the tagged fields modern brokers send (librdkafka #4278); run scripts/setup"
        case .invalidConfiguration(let key, let reason):
            return "Kafka client option \(key): \(reason)"
        case .clientCreationFailed(let reason):
            return "could not create a Kafka client: \(reason)"
        case .invalidTopicName(let name, let reason):
            return "invalid Kafka topic name \"\(name)\": \(reason)"
        case .recordTooLarge(let size, let limit):
            return "record of \(size) bytes exceeds the maximum record size of \(limit) bytes"
        case .invalidHeaderName(let name):
            return "invalid Kafka header name \"\(name)\""
        case .deliveryTimedOut(let topic, let after, let unknown):
            return "no acknowledgement from Kafka for a record to \(topic) within \(after)" + (unknown ? " (outcome unknown: it may still be written)" : "")
        case .deliveryFailed(let topic, let code, let reason):
            return "Kafka refused a record to \(topic): \(reason) (error \(code))"
        case .closed:
            return "the Kafka client is closed"
        case .operationFailed(let operation, let code, let reason):
            return "Kafka \(operation) failed: \(reason) (error \(code))"
        case .fatal(let code, let reason):
            return "fatal Kafka client error: \(reason) (error \(code))"
        }
    }

    static func errorName(_ code: rd_kafka_resp_err_t) -> String {
        String(cString: rd_kafka_err2str(code))
    }
}
