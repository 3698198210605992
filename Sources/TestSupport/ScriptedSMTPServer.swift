import Foundation

/// A destination SMTP server whose behaviour a test scripts (Tests/Scripts/scripted_smtp.py on
/// aiosmtpd): 4xx/5xx at any stage, disconnects in the middle of DATA, STARTTLS required. It
/// records every connection and every accepted message (with its exact bytes) as JSON lines.
public final class ScriptedSMTPServer: Sendable {
    /// One line of the record.
    public struct Record: Decodable, Sendable {
        public var event: String
        public var conn: Int?
        public var time: Double?
        public var sender: String?
        public var recipients: [String]?
        public var tls: Bool?
        public var size: Int?
        public var sha256: String?
        public var stage: String?
        public var reply: String?
        public var dataPath: String?
        /// The EHLO/HELO name of the connection (message records).
        public var helo: String?

        enum CodingKeys: String, CodingKey {
            case event, conn, time, sender, recipients, tls, size, sha256, stage, reply, helo
            case dataPath = "data_path"
        }
    }

    public let port: Int
    public let recordPath: String
    private let process: ManagedProcess

    public static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Tests/Scripts/scripted_smtp.py").standardized.path

    /// Starts the server with `script` (the JSON rules; see the script's docstring) on a free
    /// loopback port, or on `port` (a test that stops and restarts a destination keeps it), at
    /// `host` (any 127.x.y.z: MX hosts of a test domain share a port on different addresses).
    public static func start(script: String = #"{"rules": []}"#, host: String = "127.0.0.1", port: Int? = nil,
                             certificate: TestCertificate? = nil, requireTLS: Bool = false) async throws -> ScriptedSMTPServer {
        let directory = try makeScratchDirectory("scripted-smtp")
        let scriptFile = directory + "/script.json"
        try script.write(toFile: scriptFile, atomically: true, encoding: .utf8)
        let port = try port ?? Loopback.freePort()
        var arguments = [scriptPath, "--listen", "\(host):\(port)", "--script", scriptFile, "--record", directory + "/record.jsonl",
                         "--hostname", "destination.test"]
        if let certificate { arguments += ["--tls-cert", certificate.certificatePath, "--tls-key", certificate.privateKeyPath] }
        if requireTLS { arguments.append("--require-tls") }
        let process = try ManagedProcess(name: "scripted-smtp", executable: "/usr/bin/python3", arguments: arguments,
                                         logPath: directory + "/server.log")
        let server = ScriptedSMTPServer(port: port, recordPath: directory + "/record.jsonl", process: process)
        do {
            try await withDeadline(.seconds(20), "scripted SMTP server to print READY") {
                while true {
                    let log = (try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? ""
                    if log.contains("READY") { return }
                    guard process.isRunning else {
                        throw ServerStartError(server: "scripted-smtp", reason: "exited before READY", log: log)
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
        } catch {
            process.stop()
            throw error
        }
        return server
    }

    private init(port: Int, recordPath: String, process: ManagedProcess) {
        self.port = port
        self.recordPath = recordPath
        self.process = process
    }

    /// Every line recorded so far; a line that is not a record fails the test that reads it.
    public func records() throws -> [Record] {
        guard let text = try? String(contentsOfFile: recordPath, encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { try JSONDecoder().decode(Record.self, from: Data($0.utf8)) }
    }

    /// The messages the server accepted.
    public func messages() throws -> [Record] {
        try records().filter { $0.event == "message" }
    }

    /// The exact bytes of an accepted message.
    public func content(of record: Record) throws -> [UInt8] {
        guard let path = record.dataPath else { return [] }
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Changes the rules of a running server (the script re-reads its file on SIGHUP): a
    /// destination that refused everything recovers, for example.
    public func replaceScript(_ script: String) throws {
        let scriptFile = URL(fileURLWithPath: recordPath).deletingLastPathComponent().appendingPathComponent("script.json").path
        try script.write(toFile: scriptFile, atomically: true, encoding: .utf8)
        process.signal(SIGHUP)
    }

    public func stop() {
        process.stop()
    }

    deinit {
        process.stop()
    }
}
