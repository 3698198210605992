import CRdKafka
import Logging

/// Hands librdkafka's log and error events to swift-log (errors are also counted in
/// `smarthost_kafka_errors_total{role,code}`).
enum LogBridge {
    /// Handles a LOG or ERROR event; returns false for any other event type.
    static func handle(_ event: OpaquePointer, role: KafkaMetrics.Role, logger: Logger) -> Bool {
        switch rd_kafka_event_type(event) {
        case RD_KAFKA_EVENT_LOG:
            var facility: UnsafePointer<CChar>?
            var message: UnsafePointer<CChar>?
            var level: Int32 = 0
            rd_kafka_event_log(event, &facility, &message, &level)
            logger.log(level: Self.level(syslog: level), "\(message.map { String(cString: $0) } ?? "")",
                       metadata: ["facility": "\(facility.map { String(cString: $0) } ?? "")"])
            return true
        case RD_KAFKA_EVENT_ERROR:
            let code = rd_kafka_event_error(event)
            let fatal = rd_kafka_event_error_is_fatal(event) != 0
            KafkaMetrics.countClientError(role, code)
            logger.log(level: fatal ? .critical : .warning, "librdkafka: \(String(cString: rd_kafka_event_error_string(event)))",
                       metadata: ["code": "\(code.rawValue)", "fatal": "\(fatal)"])
            return true
        default:
            return false
        }
    }

    static func level(syslog: Int32) -> Logger.Level {
        switch syslog {
        case ...2: return .critical
        case 3: return .error
        case 4: return .warning
        case 5: return .notice
        case 6: return .info
        default: return .debug
        }
    }
}
