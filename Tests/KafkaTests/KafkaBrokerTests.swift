import Foundation
import Logging
import ServiceLifecycle
import Testing
import TestSupport
@testable import Kafka

/// Kafka behaviour against a real Tansu broker started for each test.
@Suite(.timeLimit(.minutes(3)))
struct KafkaBrokerTests {
    /// Tansu makes a new group's first join wait about half the session timeout: keep it low.
    static let sessionTimeout: Duration = .seconds(6)

    func producerConfiguration(_ broker: TansuBroker) -> KafkaProducerConfiguration {
        var configuration = KafkaProducerConfiguration(bootstrapServers: [broker.bootstrap])
        configuration.deliveryTimeout = .seconds(5)
        return configuration
    }

    func consumerConfiguration(_ broker: TansuBroker, group: String, topics: [String]) -> KafkaConsumerConfiguration {
        var configuration = KafkaConsumerConfiguration(bootstrapServers: [broker.bootstrap], groupID: group, topics: topics)
        configuration.sessionTimeout = Self.sessionTimeout
        configuration.metadataRefresh = .seconds(1)
        configuration.commitInterval = .milliseconds(200)
        return configuration
    }

    /// Reads until `count` distinct records arrived (failing after `limit`), without marking
    /// any done. At-least-once delivery may hand a record out twice across a rebalance; the
    /// repeats are dropped here.
    func read(_ consumer: KafkaConsumer, count: Int, within limit: Duration = .seconds(60)) async throws -> [ConsumedRecord] {
        try await withDeadline(limit, "reading \(count) records") {
            var records: [ConsumedRecord] = []
            var seen: Set<String> = []
            while records.count < count {
                let batch = await consumer.nextBatch(max: 500)
                if batch.isEmpty { break }
                records += batch.filter { seen.insert(position($0)).inserted }
            }
            return records
        }
    }

    /// Creates `topic` and fills it with `count` small records keyed k0, k1, ...
    func fill(_ broker: TansuBroker, topic: String, partitions: Int, count: Int) async throws -> [DeliveryReport] {
        try await KafkaAdmin(bootstrapServers: [broker.bootstrap]).createTopic(topic, partitions: partitions)
        let producer = try KafkaProducer(configuration: producerConfiguration(broker))
        var reports: [DeliveryReport] = []
        for index in 0..<count {
            reports.append(try await producer.send(OutgoingRecord(topic: topic, key: Array("k\(index)".utf8), value: Array("v\(index)".utf8))))
        }
        await producer.close()
        return reports
    }

    func position(_ record: ConsumedRecord) -> String {
        "\(record.topicPartition)@\(record.offset)"
    }

    func randomBytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255) }
    }

    @Test func linkedLibraryIsNewEnough() throws {
        try LibraryVersion.check()
        #expect(LibraryVersion.linked >= LibraryVersion.minimum, "linked \(LibraryVersion.linkedString)")
    }

    @Test func producedRecordsComeBackByteExactThroughAConsumerGroup() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let admin = try KafkaAdmin(bootstrapServers: [broker.bootstrap])
        try await admin.createTopic("smarthost.acme", partitions: 3)
        #expect(try await admin.topics().contains(TopicDescription(name: "smarthost.acme", partitions: 3)))

        var configuration = producerConfiguration(broker)
        configuration.maxInFlight = 200  // fewer than we send: exercises the backpressure path
        let producer = try KafkaProducer(configuration: configuration)
        let count = 2_000
        let sent: [OutgoingRecord] = (0..<count).map { index in
            OutgoingRecord(
                topic: "smarthost.acme", key: Array("message-\(index)".utf8),
                value: randomBytes(Int.random(in: 0...4096)) + Array("\r\n.\r\n\0".utf8),
                headers: [KafkaHeader(name: "rcpt", string: "a\(index)@example.com"),
                          KafkaHeader(name: "rcpt", string: "b\(index)@example.com"),
                          KafkaHeader(name: "binary", value: randomBytes(16))])
        }
        let reports = try await withThrowingTaskGroup(of: (Int, DeliveryReport).self) { group in
            for (index, record) in sent.enumerated() {
                group.addTask { (index, try await producer.send(record)) }
            }
            var reports = [DeliveryReport?](repeating: nil, count: count)
            for try await (index, report) in group { reports[index] = report }
            return reports.compactMap { $0 }
        }
        #expect(reports.count == count)
        #expect(Set(reports.map { "\($0.partition):\($0.offset)" }).count == count, "every record has its own place")
        await producer.close()

        let consumer = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "roundtrip", topics: ["^smarthost\\..*"]))
        let received = try await read(consumer, count: count)
        await consumer.close()

        #expect(received.count == count)
        let byKey = Dictionary(uniqueKeysWithValues: received.map { ($0.key!, $0) })
        for (index, record) in sent.enumerated() {
            let got = try #require(byKey[record.key!], "record \(index) missing")
            #expect(got.value == record.value)
            #expect(got.headers == record.headers)
            #expect(got.partition == reports[index].partition && got.offset == reports[index].offset)
        }
    }

    @Test func producerOutcomesAndLatencyReachPrometheus() async throws {
        _ = TestMetrics.registry
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let acknowledged = #"smarthost_kafka_produced_total{result="acknowledged"}"#
        let before = TestMetrics.value(of: acknowledged) ?? 0
        let producer = try KafkaProducer(configuration: producerConfiguration(broker))
        for index in 0..<3 {
            _ = try await producer.send(OutgoingRecord(topic: "metrics", value: Array("\(index)".utf8)))
        }
        await producer.close()
        // Other tests produce at the same time: at least our three were counted.
        #expect(try #require(TestMetrics.value(of: acknowledged)) >= before + 3)
        #expect(try #require(TestMetrics.value(of: "smarthost_kafka_produce_ack_seconds_count")) >= 3)

        // A record refused is counted under librdkafka's name for the reason.
        let tooLarge = #"smarthost_kafka_produce_errors_total{reason="MSG_SIZE_TOO_LARGE"}"#
        let refusedBefore = TestMetrics.value(of: tooLarge) ?? 0
        var small = producerConfiguration(broker)
        small.maxRecordSize = 16
        let strict = try KafkaProducer(configuration: small)
        await #expect(throws: KafkaError.recordTooLarge(size: 32, limit: 16)) {
            _ = try await strict.send(OutgoingRecord(topic: "metrics", value: [UInt8](repeating: 0, count: 32)))
        }
        await strict.close()
        #expect(try #require(TestMetrics.value(of: tooLarge)) >= refusedBefore + 1)
    }

    /// librdkafka's error events (here: a bootstrap broker that refuses connections) are
    /// counted by client role and error name.
    @Test func clientErrorsReachPrometheus() async throws {
        _ = TestMetrics.registry
        let transport = #"smarthost_kafka_errors_total{role="producer",code="_TRANSPORT"}"#
        let before = TestMetrics.value(of: transport) ?? 0
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: ["127.0.0.1:\(try Loopback.freePort())"]))
        let counted = try await withDeadline(.seconds(20), "a _TRANSPORT error event") {
            while (TestMetrics.value(of: transport) ?? 0) < before + 1 { try await Task.sleep(for: .milliseconds(100)) }
            return true
        }
        #expect(counted)
        await producer.close(timeout: .milliseconds(100))
    }

    @Test func aRestartedConsumerGetsWhatWasNotDoneAndNothingItCommitted() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let reports = try await fill(broker, topic: "partial", partitions: 3, count: 300)

        // Done: offsets below 40 of each partition, and two records above a gap (50, 51).
        let isDone: (Int64) -> Bool = { $0 < 40 || $0 == 50 || $0 == 51 }
        let first = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "partial", topics: ["partial"]))
        let firstRead = try await read(first, count: 300)
        for record in firstRead where isDone(record.offset) {
            #expect(first.markDone(record))
        }
        try await first.commit()
        await first.close()

        // The commit stops at the gap: 50 and 51 come again (at least once), nothing below 40 does.
        let expected = Set(reports.filter { $0.offset >= 40 }.map { "\(TopicPartition(topic: $0.topic, partition: $0.partition))@\($0.offset)" })
        let second = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "partial", topics: ["partial"]))
        let secondRead = try await read(second, count: expected.count)
        await second.close()
        let got = secondRead.map { position($0) }
        #expect(got.count == expected.count)
        #expect(Set(got) == expected)
        #expect(secondRead.allSatisfy { $0.offset >= 40 }, "a committed record came back")
    }

    @Test func aRebalanceNeverCommitsRecordsThatAreNotDone() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        _ = try await fill(broker, topic: "rebalance", partitions: 4, count: 200)

        // The first member reads everything and marks only the first half of what it read done.
        let first = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "rebalance", topics: ["rebalance"]))
        let read1 = try await read(first, count: 200)
        let done = Set(read1.filter { $0.offset < 25 }.map { position($0) })
        for record in read1 where record.offset < 25 { first.markDone(record) }

        // A second member joins: partitions are revoked from the first and shared out.
        let second = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "rebalance", topics: ["rebalance"]))
        try await withDeadline(.seconds(60), "the group rebalancing to two members") {
            while second.assignment.isEmpty || first.assignment.count == 4 {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        // Records of partitions the first member lost can no longer be marked done by it.
        let lost = read1.filter { !first.assignment.contains($0.topicPartition) && $0.offset >= 25 }
        #expect(!lost.isEmpty)
        #expect(lost.allSatisfy { !first.markDone($0) })
        await first.close()

        // Everything not done comes back to the second member; nothing done does.
        let read2 = try await read(second, count: 200 - done.count)
        await second.close()
        let got = Set(read2.map { position($0) })
        #expect(got.count == 200 - done.count)
        #expect(got.isDisjoint(with: done))
    }

    @Test func aPausedBrokerMakesSendFailWithinTheDeliveryTimeoutAndRecovers() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        var configuration = producerConfiguration(broker)
        configuration.deliveryTimeout = .seconds(3)
        let producer = try KafkaProducer(configuration: configuration)
        _ = try await producer.send(OutgoingRecord(topic: "outage", value: Array("before".utf8)))

        broker.pause()
        let started = ContinuousClock.now
        await #expect {
            _ = try await producer.send(OutgoingRecord(topic: "outage", value: Array("during".utf8)))
        } throws: { error in
            guard case KafkaError.deliveryTimedOut(topic: "outage", after: .seconds(3), _) = error else { return false }
            return true
        }
        let elapsed = ContinuousClock.now - started
        // The bound is the delivery timeout plus the caller-side guard of 2 s; allow 1 s of scheduling.
        #expect(elapsed < .seconds(6), "send failed only after \(elapsed)")

        broker.resume()
        // The reconnect can take one timeout, and after the idempotent producer bumps its epoch
        // Tansu 0.6 refuses the first record (PRODUCER_FENCED, not persisted): both are
        // transient errors a caller retries.
        let (recovered, failures) = try await withDeadline(.seconds(30), "a send after the broker resumed") {
            var failures: [KafkaError] = []
            while true {
                do {
                    return (try await producer.send(OutgoingRecord(topic: "outage", value: Array("after".utf8))), failures)
                } catch let error as KafkaError {
                    failures.append(error)
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        #expect(recovered.topic == "outage")
        #expect(failures.count <= 3, "recovering took \(failures)")
        await producer.close()
    }

    @Test func badRecordsAreRejectedWithAClearErrorAndNothingIsWritten() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        var configuration = producerConfiguration(broker)
        configuration.maxRecordSize = 1024
        let producer = try KafkaProducer(configuration: configuration)

        await #expect(throws: KafkaError.recordTooLarge(size: 2000, limit: 1024)) {
            _ = try await producer.send(OutgoingRecord(topic: "bad", value: [UInt8](repeating: 65, count: 2000)))
        }
        await #expect(throws: KafkaError.recordTooLarge(size: 1030, limit: 1024), "the key counts too") {
            _ = try await producer.send(OutgoingRecord(topic: "bad", key: [UInt8](repeating: 1, count: 30), value: [UInt8](repeating: 65, count: 1000)))
        }
        await #expect(throws: KafkaError.invalidTopicName("bad topic", reason: "character U+0020 is not allowed; use A-Z a-z 0-9 . _ -")) {
            _ = try await producer.send(OutgoingRecord(topic: "bad topic", value: []))
        }
        await #expect(throws: KafkaError.invalidTopicName("", reason: "it is empty")) {
            _ = try await producer.send(OutgoingRecord(topic: "", value: []))
        }
        await #expect(throws: KafkaError.invalidTopicName("..", reason: "\".\" and \"..\" are reserved")) {
            _ = try await producer.send(OutgoingRecord(topic: "..", value: []))
        }
        await #expect(throws: KafkaError.invalidHeaderName("")) {
            _ = try await producer.send(OutgoingRecord(topic: "bad", value: [], headers: [KafkaHeader(name: "", string: "x")]))
        }
        // Nothing of the above reached the topic: the first good record gets offset 0.
        let good = try await producer.send(OutgoingRecord(topic: "bad", value: Array("good".utf8)))
        #expect(good.offset == 0)
        await producer.close()

        // librdkafka's own size check is mapped to the same error.
        var strict = producerConfiguration(broker)
        strict.extraOptions = ["message.max.bytes": "1000"]
        let strictProducer = try KafkaProducer(configuration: strict)
        await #expect(throws: KafkaError.recordTooLarge(size: 5000, limit: strict.maxRecordSize)) {
            _ = try await strictProducer.send(OutgoingRecord(topic: "bad", value: [UInt8](repeating: 66, count: 5000)))
        }
        await strictProducer.close()

        #expect(throws: KafkaError.invalidConfiguration(key: "acks", reason: "Invalid value for configuration property \"request.required.acks\"")) {
            var broken = producerConfiguration(broker)
            broken.extraOptions = ["acks": "sometimes"]
            _ = try KafkaProducer(configuration: broken)
        }
    }

    @Test func aRegexSubscriptionPicksUpTopicsCreatedLater() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let admin = try KafkaAdmin(bootstrapServers: [broker.bootstrap])
        try await admin.createTopic("tenants.first", partitions: 1)
        let producer = try KafkaProducer(configuration: producerConfiguration(broker))
        _ = try await producer.send(OutgoingRecord(topic: "tenants.first", value: Array("one".utf8)))

        let consumer = try KafkaConsumer(configuration: consumerConfiguration(broker, group: "regex", topics: ["^tenants\\..*"]))
        let first = try await read(consumer, count: 1)
        #expect(first.map(\.topic) == ["tenants.first"])
        #expect(consumer.markDone(first[0]))
        try await consumer.commit()

        try await admin.createTopic("tenants.second", partitions: 1)
        _ = try await producer.send(OutgoingRecord(topic: "tenants.second", value: Array("two".utf8)))
        let second = try await read(consumer, count: 1)
        #expect(second.map(\.topic) == ["tenants.second"])
        #expect(second.first?.value == Array("two".utf8))
        await producer.close()
        await consumer.close()
    }

    @Test func aSlowReaderPausesFetchingAndLosesNothing() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let count = 500
        _ = try await fill(broker, topic: "slow", partitions: 4, count: count)

        var configuration = consumerConfiguration(broker, group: "slow", topics: ["slow"])
        configuration.bufferCapacity = 20
        let consumer = try KafkaConsumer(configuration: configuration)
        consumer.pause()  // the caller's own pause (e.g. a full spool) holds before anything is read
        try await Task.sleep(for: .seconds(1))
        consumer.resume()
        let keys = try await withDeadline(.seconds(60), "reading \(count) records slowly") {
            var keys: [String] = []
            while keys.count < count {
                let batch = await consumer.nextBatch(max: 7)
                keys += batch.map { String(decoding: $0.key!, as: UTF8.self) }
                for record in batch { consumer.markDone(record) }
                try await Task.sleep(for: .milliseconds(5))
            }
            return keys
        }
        try await consumer.commit()
        await consumer.close()
        #expect(keys.count == count)
        #expect(Set(keys) == Set((0..<count).map { "k\($0)" }))
    }

    @Test func closeFlushesEveryOutstandingRecord() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let producer = try KafkaProducer(configuration: producerConfiguration(broker))
        let sends = (0..<100).map { index in
            Task { try await producer.send(OutgoingRecord(topic: "flush", value: Array("\(index)".utf8))) }
        }
        try await Task.sleep(for: .milliseconds(10))
        await producer.close()
        var acknowledged = 0
        for send in sends {
            switch await send.result {
            case .success: acknowledged += 1
            case .failure(let error): #expect(error as? KafkaError == .closed, "only sends made after close may fail")
            }
        }
        #expect(acknowledged > 0)
        await #expect(throws: KafkaError.closed) {
            _ = try await producer.send(OutgoingRecord(topic: "flush", value: []))
        }
    }
}

/// The clients as ServiceLifecycle services: a graceful shutdown (what SIGTERM triggers in a
/// node) flushes the producer and closes the consumer.
@Suite(.timeLimit(.minutes(2)))
struct KafkaServiceLifecycleTests {
    @Test func gracefulShutdownFlushesTheProducerAndClosesTheConsumer() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: [broker.bootstrap]))
        var consumerConfiguration = KafkaConsumerConfiguration(bootstrapServers: [broker.bootstrap], groupID: "lifecycle", topics: ["lifecycle"])
        consumerConfiguration.sessionTimeout = .seconds(6)
        let consumer = try KafkaConsumer(configuration: consumerConfiguration)
        let group = ServiceGroup(configuration: .init(services: [producer, consumer], logger: Logger(label: "test")))

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let sends = (0..<50).map { index in
                Task { try await producer.send(OutgoingRecord(topic: "lifecycle", value: Array("\(index)".utf8))) }
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()  // the group returns only after both services finished
            for send in sends {
                if case .failure(let error) = await send.result {
                    #expect(error as? KafkaError == .closed, "a send that got in before the shutdown failed: \(error)")
                }
            }
        }
        #expect(await consumer.nextBatch(max: 1).isEmpty, "a closed consumer returns nothing")
        await #expect(throws: KafkaError.closed) { try await consumer.commit() }
        await #expect(throws: KafkaError.closed) {
            _ = try await producer.send(OutgoingRecord(topic: "lifecycle", value: []))
        }
    }
}
