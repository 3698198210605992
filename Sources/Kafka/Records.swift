/// A Kafka record header: a name and opaque bytes. Names repeat when a value is a list
/// (for example one header per recipient).
public struct KafkaHeader: Sendable, Equatable, Hashable {
    public var name: String
    public var value: [UInt8]

    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }

    public init(name: String, string: String) {
        self.init(name: name, value: Array(string.utf8))
    }
}

/// A record to produce. `key` chooses the partition (same key, same partition).
public struct OutgoingRecord: Sendable, Equatable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]

    public init(topic: String, key: [UInt8]? = nil, value: [UInt8], headers: [KafkaHeader] = []) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// The bytes the size limit applies to: key, value and headers.
    public var size: Int {
        (key?.count ?? 0) + value.count + headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.count }
    }
}

/// Where Kafka stored an acknowledged record.
public struct DeliveryReport: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// A partition of a topic.
public struct TopicPartition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (a: Self, b: Self) -> Bool {
        (a.topic, a.partition) < (b.topic, b.partition)
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// A record read by a consumer. Hand it back to `KafkaConsumer.markDone` once it is durably
/// handled; only then can its offset be committed.
public struct ConsumedRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]
    /// Milliseconds since the epoch, as the producer or broker stamped it.
    public var timestamp: Int64?

    public init(topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader] = [],
                timestamp: Int64? = nil) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    public var topicPartition: TopicPartition { TopicPartition(topic: topic, partition: partition) }

    /// All values of the headers named `name`, in order.
    public func headerValues(_ name: String) -> [[UInt8]] {
        headers.filter { $0.name == name }.map(\.value)
    }
}
