import Foundation

/// Kafka's rules for topic names, checked before anything reaches the broker.
public enum TopicName {
    public static let maximumLength = 249

    public static func validate(_ name: String) throws(KafkaError) {
        if name.isEmpty { throw .invalidTopicName(name, reason: "it is empty") }
        if name == "." || name == ".." { throw .invalidTopicName(name, reason: "\".\" and \"..\" are reserved") }
        if name.utf8.count > maximumLength {
            throw .invalidTopicName(String(name.prefix(40)) + "…", reason: "it is longer than \(maximumLength) characters")
        }
        if let bad = name.unicodeScalars.first(where: { !isAllowed($0) }) {
            throw .invalidTopicName(name, reason: "character \(String(format: "U+%04X", bad.value)) is not allowed; use A-Z a-z 0-9 . _ -")
        }
    }

    static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": return true
        default: return false
        }
    }
}
