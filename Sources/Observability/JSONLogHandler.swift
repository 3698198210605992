import Foundation
import Logging
import Synchronization

/// A swift-log handler that writes one JSON object per line: easy for log shippers, and a
/// message id or address in metadata stays a field, not text to parse.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let staticFields: [(String, String)]
    private let output: LogOutput

    public init(label: String, level: Logger.Level, staticFields: [(String, String)] = [], output: LogOutput = .standardError) {
        self.label = label
        self.logLevel = level
        self.staticFields = staticFields
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        output.write(Self.line(timestamp: Date(), level: event.level, label: label, message: event.message.description,
                               staticFields: staticFields, metadata: merged))
    }

    /// One log record as a JSON line: fixed fields first, then metadata sorted by key.
    static func line(timestamp: Date, level: Logger.Level, label: String, message: String,
                     staticFields: [(String, String)], metadata: Logger.Metadata) -> String {
        var fields: [(String, String)] = [
            ("ts", JSON.string(timestamp.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))),
            ("level", JSON.string(level.rawValue)),
            ("logger", JSON.string(label)),
        ]
        fields += staticFields.map { ($0.0, JSON.string($0.1)) }
        fields.append(("msg", JSON.string(message)))
        fields += metadata.sorted { $0.key < $1.key }.map { ($0.key, JSON.value($0.value)) }
        return "{" + fields.map { "\(JSON.string($0.0)):\($0.1)" }.joined(separator: ",") + "}\n"
    }
}

/// Where log lines go; a line is written whole, so concurrent records never interleave.
public final class LogOutput: Sendable {
    private let lock = Mutex(())
    private let descriptor: Int32

    public static let standardError = LogOutput(descriptor: 2)

    public init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    func write(_ line: String) {
        var bytes = Array(line.utf8)
        lock.withLock { _ in
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { Foundation.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
                if written <= 0 { return }
                offset += written
            }
        }
        bytes.removeAll()
    }
}

/// JSON text encoding of strings and log metadata (logs, HTTP answers).
public enum JSON {
    /// `text` as a JSON string literal; control characters and the line separators that break
    /// some JSON readers are escaped.
    public static func string(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f || scalar.value == 0x2028 || scalar.value == 0x2029:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func value(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return string(text)
        case .stringConvertible(let convertible): return string(convertible.description)
        case .array(let values): return "[" + values.map(Self.value).joined(separator: ",") + "]"
        case .dictionary(let dictionary):
            return "{" + dictionary.sorted { $0.key < $1.key }.map { "\(string($0.key)):\(Self.value($0.value))" }.joined(separator: ",") + "}"
        }
    }
}
