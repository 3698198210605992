import Foundation
import Kafka

/// Reads what a topic holds, from the beginning, with a consumer group of its own: returns once
/// `count` records arrived or `timeout` passed, whichever comes first. With `thenWatchFor`,
/// reading goes on that long after the count is reached, so that a test expecting exactly N
/// sees any record beyond them.
public func readRecords(_ broker: TansuBroker, topic: String, count: Int, timeout: Duration = .seconds(60),
                        thenWatchFor extra: Duration = .zero) async throws -> [ConsumedRecord] {
    var settings = KafkaConsumerConfiguration(bootstrapServers: [broker.bootstrap], groupID: "check-\(UUID())", topics: [topic])
    settings.sessionTimeout = .seconds(6)
    let consumer = try KafkaConsumer(configuration: settings)
    // Closing the consumer is what ends a wait for records that never come.
    let deadline = Task {
        try? await Task.sleep(for: timeout)
        await consumer.close()
    }
    var records: [ConsumedRecord] = []
    var watch: Task<Void, Never>?
    while true {
        if records.count >= count {
            guard extra > .zero else { break }
            if watch == nil {
                watch = Task {
                    try? await Task.sleep(for: extra)
                    await consumer.close()
                }
            }
        }
        let batch = await consumer.nextBatch(max: 1000)
        if batch.isEmpty { break }
        records += batch
    }
    deadline.cancel()
    watch?.cancel()
    await consumer.close()
    return records
}
