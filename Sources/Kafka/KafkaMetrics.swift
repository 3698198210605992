import CRdKafka
import Metrics

/// The Kafka errors a node counts, by librdkafka's error names (`rd_kafka_err2name`: `_TRANSPORT`,
/// `_MSG_TIMED_OUT`, `NOT_ENOUGH_REPLICAS`, ...): a bounded set that operators can look up.
/// Help text and buckets of these and the other Kafka metrics: Observability's MetricCatalog.
enum KafkaMetrics {
    /// Which client saw an error.
    enum Role: String {
        case producer, consumer
    }

    static func name(_ code: rd_kafka_resp_err_t) -> String {
        String(cString: rd_kafka_err2name(code))
    }

    /// An error librdkafka reported to a client outside a delivery report: a broker connection
    /// lost, all brokers down, a fetch or rebalance that failed.
    static func countClientError(_ role: Role, _ code: rd_kafka_resp_err_t) {
        Counter(label: "smarthost_kafka_errors_total", dimensions: [("role", role.rawValue), ("code", name(code))]).increment()
    }

    /// A record that was not acknowledged.
    static func countProduceError(_ error: KafkaError) {
        Counter(label: "smarthost_kafka_produce_errors_total", dimensions: [("reason", produceErrorReason(error))]).increment()
    }

    static func produceErrorReason(_ error: KafkaError) -> String {
        switch error {
        case .recordTooLarge: name(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        case .deliveryTimedOut: name(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        case .deliveryFailed(_, let code, _), .operationFailed(_, let code, _), .fatal(let code, _):
            name(rd_kafka_resp_err_t(rawValue: code))
        case .closed: name(RD_KAFKA_RESP_ERR__DESTROY)
        case .libraryTooOld, .invalidConfiguration, .clientCreationFailed, .invalidTopicName, .invalidHeaderName:
            name(RD_KAFKA_RESP_ERR__INVALID_ARG)
        }
    }
}
