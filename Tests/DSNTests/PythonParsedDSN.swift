import DSN
import Foundation
import TestSupport

/// A DSN as Python's email package parsed it (Tests/Scripts/parse_dsn.py describes each field).
struct PythonParsedDSN: Decodable {
    struct Part: Decodable {
        var contentType: String
        var charset: String?
        var transferEncoding: String?
        var description: String?
    }

    var contentType: String
    var reportType: String?
    var boundary: String?
    var transferEncoding: String?
    var from: String?
    var to: String?
    var subject: String?
    var date: String?
    var messageId: String?
    var autoSubmitted: String?
    var mimeVersion: String?
    var defects: [String]
    var headerDefects: [String]
    var parts: [Part]
    var text: String?
    var perMessage: [String: String]?
    var perRecipient: [[String: String]]
    var originalHeaders: [[String]]?

    static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../Scripts/parse_dsn.py").standardized.path

    /// Runs the script on `dsn`'s octets; a script failure (invalid UTF-8, an exception) fails the test.
    static func parse(_ dsn: DeliveryStatusNotification) async throws -> PythonParsedDSN {
        let file = NSTemporaryDirectory() + "dsn-\(UUID().uuidString).eml"
        try Data(dsn.content).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try await runCommand("/usr/bin/python3", [scriptPath, file])
        guard result.status == 0 else { throw ScriptFailure(status: result.status, errors: result.errors) }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(PythonParsedDSN.self, from: Data(result.output.utf8))
    }

    struct ScriptFailure: Error, CustomStringConvertible {
        var status: Int32
        var errors: String
        var description: String { "parse_dsn.py exited with \(status): \(errors)" }
    }

    var partTypes: [String] { parts.map(\.contentType) }
    /// The text/plain part with its lines joined and indentation collapsed, to find sentences in.
    var flatText: String { (text ?? "").split(whereSeparator: \.isWhitespace).joined(separator: " ") }
}
