import CRdKafka

/// The librdkafka this process actually loaded (which may differ from the headers it was
/// built against: see docs/kafka.md).
public enum LibraryVersion {
    /// 2.2.0: the first release that parses tagged fields correctly (librdkafka #4278).
    public static let minimum: Int32 = 0x0202_0000
    public static let minimumString = "2.2.0"

    public static var linked: Int32 { rd_kafka_version() }
    public static var linkedString: String { String(cString: rd_kafka_version_str()) }

    /// Refuses to run against a librdkafka that cannot talk to modern brokers.
    public static func check() throws(KafkaError) {
        guard linked >= minimum else {
            throw .libraryTooOld(linked: linkedString, required: minimumString)
        }
    }
}
