import Foundation
import Kafka

/// Reads what a topic holds, from the beginning, with a consumer group of its own: returns once
/// `count` records arrived or `timeout` passed, whichever comes first (a test that expects
/// exactly N asks for N + 1 and a short timeout).
public func readRecords(_ broker: TansuBroker, topic: String, count: Int,
                        timeout: Duration = .seconds(60)) async throws -> [ConsumedRecord] {
    var settings = KafkaConsumerConfiguration(bootstrapServers: [broker.bootstrap], groupID: "check-\(UUID())", topics: [topic])
    settings.sessionTimeout = .seconds(6)
    let consumer = try KafkaConsumer(configuration: settings)
    // Closing the consumer is what ends a wait for records that never come.
    let deadline = Task {
        try? await Task.sleep(for: timeout)
        await consumer.close()
    }
    var records: [ConsumedRecord] = []
    while records.count < count {
        let batch = await consumer.nextBatch(max: min(1000, count - records.count))
        if batch.isEmpty { break }
        records += batch
    }
    deadline.cancel()
    await consumer.close()
    return records
}
