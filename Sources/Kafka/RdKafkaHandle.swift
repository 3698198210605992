import CRdKafka
import Foundation

/// A librdkafka client handle (`rd_kafka_t*`) or queue (`rd_kafka_queue_t*`) shared across threads.
///
/// Safe to send: librdkafka documents every call on an `rd_kafka_t` and its queues as
/// thread-safe, and the owners below (`KafkaProducer`, `KafkaConsumer`, `KafkaAdmin`) destroy
/// the handle only after their polling thread has stopped and no call can still be running.
struct RdKafkaPointer: @unchecked Sendable {
    let raw: OpaquePointer
}

/// Builds a librdkafka configuration and a client from string options; owns the error paths
/// where the configuration must still be destroyed.
enum RdKafkaClient {
    /// `events` selects what librdkafka delivers as events on the client's queues
    /// (delivery reports, logs, errors, rebalances) instead of through C callbacks.
    static func make(type: rd_kafka_type_t, options: [(String, String)], events: Int32) throws(KafkaError) -> RdKafkaPointer {
        try LibraryVersion.check()
        let conf = rd_kafka_conf_new()!
        rd_kafka_conf_set_events(conf, events)
        var errstr = [CChar](repeating: 0, count: 512)
        for (key, value) in options {
            let rc = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
            guard rc == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                throw .invalidConfiguration(key: key, reason: errorText(errstr))
            }
        }
        guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            // rd_kafka_new takes ownership of the conf only when it succeeds.
            rd_kafka_conf_destroy(conf)
            throw .clientCreationFailed(errorText(errstr))
        }
        return RdKafkaPointer(raw: handle)
    }

    /// Options every client gets: logs through our queue (into swift-log), not stderr.
    static func commonOptions(bootstrapServers: [String], clientID: String) -> [(String, String)] {
        [
            ("bootstrap.servers", bootstrapServers.joined(separator: ",")),
            ("client.id", clientID),
            ("log.queue", "true"),
        ]
    }
}

/// Runs blocking librdkafka calls (metadata, topic creation, destroy) on a thread of their
/// own, never on Swift's cooperative pool.
func runBlocking<T: Sendable>(_ name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: body()) }
        thread.name = name
        thread.start()
    }
}

/// Starts a named thread running `body` (a client's polling loop).
func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}

/// The NUL-terminated text librdkafka wrote into an error buffer.
func errorText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
