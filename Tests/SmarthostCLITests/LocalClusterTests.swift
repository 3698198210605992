import Foundation
import Testing
import TestSupport

/// `cluster/up` as an operator runs it (with the tests' debug binary instead of a release
/// build): mail sent to the printed address arrives at the sink, one file per message; the
/// printed swaks commands for STARTTLS, submission with the demo login and implicit TLS work
/// as printed, and submission refuses plaintext AUTH and mail without a login; and
/// `cluster/status` lists every process it started as running, until one dies.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct LocalClusterTests {
    struct Endpoints: Decodable {
        struct Node: Decodable {
            var id: String
            var pid: Int32
        }
        struct Login: Decodable {
            var tenant: String
            var username: String
            var password_file: String
        }
        struct TLSFiles: Decodable {
            var certificate_file: String
            var private_key_file: String
        }
        var smtp: String
        var submission: String
        var smtps: String
        var tls: TLSFiles
        var login: Login
        var sink_dir: String
        var mx_sink_dirs: [String: String]
        var nodes: [Node]
        var processes: [String: Int32]
    }

    /// What `cluster/status --json` says.
    struct Status: Decodable {
        struct Process: Decodable {
            var name: String
            var pid: Int32?
            var state: String
            var ready: Bool?
        }
        var smtp: String?
        var submission: String?
        var smtps: String?
        var processes: [Process]
        var dead: [String]
    }

    @Test func mailSentToTheClusterArrivesAtTheSink() async throws {
        let run = NSTemporaryDirectory() + "cluster-run-\(UUID().uuidString.prefix(8))"
        do {
            try await exercise(run: run, up: try await Self.up(run: run))
        } catch {
            await Self.down(run: run)
            throw error
        }
        await Self.down(run: run)
    }

    /// cluster/up on free ports, as a managed process (Foundation's Process never noticed this
    /// script's exit), waited for. Ports are free when picked, but the tests running beside
    /// this one open connections too: when cluster/up finds one taken, or a process it started
    /// could not bind its port (taken between cluster/up's check and the bind), it is tried
    /// again on new ones (at most three times); any other failure fails the test.
    static func up(run: String) async throws -> String {
        var output = ""
        for _ in 1...3 {
            let environment = [
                "SMARTHOST_RUN_DIR=\(run)", "SMARTHOST_BINARY=\(SmarthostCLITests.binary)",
                "SMARTHOST_KAFKA_PORT=\(try Loopback.freePort())", "SMARTHOST_REDIS_PORT=\(try Loopback.freePort())",
                "SMARTHOST_SMTP_PORT=\(try Loopback.freePort())", "SMARTHOST_INGRESS_BASE_PORT=\(try Loopback.freePort())",
                "SMARTHOST_SUBMISSION_PORT=\(try Loopback.freePort())", "SMARTHOST_SMTPS_PORT=\(try Loopback.freePort())",
                "SMARTHOST_INGRESS_SUBMISSION_BASE_PORT=\(try Loopback.freePort())",
                "SMARTHOST_INGRESS_SMTPS_BASE_PORT=\(try Loopback.freePort())",
                "SMARTHOST_ADMIN_BASE_PORT=\(try Loopback.freePort())", "SMARTHOST_DELIVERY_ADMIN_BASE_PORT=\(try Loopback.freePort())",
                "SMARTHOST_SINK_PORT=\(try Loopback.freePort())", "SMARTHOST_DNS_PORT=\(try Loopback.freePort())",
            ] + (FileManager.default.isExecutableFile(atPath: ctlBinary) ? ["SMARTHOST_CTL_BINARY=\(ctlBinary)"] : [])
            let up = try ManagedProcess(name: "cluster/up", executable: "/usr/bin/env",
                                        arguments: environment + ["\(repositoryRoot)/cluster/up", "--ingress", "1", "--delivery", "1"],
                                        logPath: "\(run).up.log")
            defer { up.stop() }
            let status = try await up.exitCode(within: .seconds(180))
            output = (try? String(contentsOfFile: "\(run).up.log", encoding: .utf8)) ?? ""
            if status == 0 { return output }
            guard status == 1, output.contains("is taken") || output.contains("Address already in use") else {
                throw ClusterError(description: "cluster/up failed (\(status.map(String.init) ?? "still running")):\n\(output)")
            }
            await down(run: run)
        }
        throw ClusterError(description: "cluster/up found a port taken three times:\n\(output)")
    }

    /// The operator CLI of the same debug build, passed to cluster/up once it is built.
    static let ctlBinary = "\(repositoryRoot)/.build/debug/smarthostctl"

    struct ClusterError: Error, CustomStringConvertible {
        let description: String
    }

    /// cluster/down, run as a managed process too (Foundation's Process has crashed in
    /// waitUntilExit here), and waited for.
    static func down(run: String) async {
        guard let down = try? ManagedProcess(name: "cluster/down", executable: "/usr/bin/env",
                                             arguments: ["SMARTHOST_RUN_DIR=\(run)", "\(repositoryRoot)/cluster/down"],
                                             logPath: "\(run).down.log") else { return }
        _ = try? await down.exitCode(within: .seconds(60))
        down.stop()
    }

    func exercise(run: String, up output: String) async throws {
        #expect(output.contains("cluster: up"))
        let endpoints = try JSONDecoder().decode(Endpoints.self, from: Data(contentsOf: URL(fileURLWithPath: "\(run)/endpoints.json")))

        let swaks = try await runCommand(try findExecutable("swaks"), [
            "--server", endpoints.smtp, "--from", "app@demo.test", "--to", "someone@example.com",
            "--header", "Subject: through the local cluster", "--body", "hello cluster"])
        #expect(swaks.status == 0, "swaks: \(swaks.output)\(swaks.errors)")

        func sinkFiles(_ directory: String = endpoints.sink_dir) -> [String] {
            let enumerator = FileManager.default.enumerator(atPath: directory)
            var files: [String] = []
            while let path = enumerator?.nextObject() as? String {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: "\(directory)/\(path)", isDirectory: &isDirectory), !isDirectory.boolValue {
                    files.append("\(directory)/\(path)")
                }
            }
            return files
        }
        // smtp-sink creates the file when the transaction starts and fills it as data arrives.
        let arrived = try await eventually(.seconds(60)) {
            sinkFiles().count == 1 && (try? String(contentsOfFile: sinkFiles()[0], encoding: .utf8))?.contains("hello cluster") == true
        }
        #expect(arrived, "files at the sink: \(sinkFiles()); delivery log:\n\((try? String(contentsOfFile: "\(run)/delivery-1.log", encoding: .utf8))?.suffix(3000) ?? "")")
        let message = try sinkFiles().first.map { try String(contentsOfFile: $0, encoding: .utf8) } ?? ""
        #expect(message.contains("Subject: through the local cluster") && message.contains("hello cluster"))
        #expect(message.contains("(smarthost) with ESMTP id"), "the ingress node's trace header")

        // The cluster's DNS server: two-mx.test's mail goes to one of its two MX sinks.
        let mx = try await runCommand(try findExecutable("swaks"), [
            "--server", endpoints.smtp, "--from", "app@demo.test", "--to", "someone@two-mx.test", "--body", "hello mx"])
        #expect(mx.status == 0, "swaks: \(mx.output)\(mx.errors)")
        let viaMX = try await eventually(.seconds(60)) {
            endpoints.mx_sink_dirs.values.flatMap { sinkFiles($0) }.count == 1
        }
        #expect(viaMX, "MX sinks: \(endpoints.mx_sink_dirs.values.map { sinkFiles($0) })")

        try await checkTLS(run: run, endpoints: endpoints, up: output)
        // The three messages sent over TLS reach the sink too.
        let overTLS = try await eventually(.seconds(60)) {
            sinkFiles().filter { (try? String(contentsOfFile: $0, encoding: .utf8))?.contains("Subject: over TLS") == true }.count == 3
        }
        #expect(overTLS, "files at the sink: \(sinkFiles())")

        try await checkStatus(run: run, endpoints: endpoints)
    }

    /// The TLS listeners through HAProxy, with the swaks commands cluster/up printed, run as
    /// printed: STARTTLS at the SMTP address (250 for a trusted loopback client), the demo login
    /// over STARTTLS at the submission address and over implicit TLS at the smtps address.
    /// Submission offers no AUTH before TLS (swaks gives up, a hand-sent AUTH gets 530 5.7.0)
    /// and relays nothing without a login, although loopback is demo's trusted network.
    func checkTLS(run: String, endpoints: Endpoints, up output: String) async throws {
        let password = try String(contentsOfFile: endpoints.login.password_file, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(password.count >= 16)
        #expect(output.contains("login   user \(endpoints.login.username)  password \(password)"), "\(output)")
        #expect(FileManager.default.fileExists(atPath: endpoints.tls.certificate_file))
        let nodeConfig = try String(contentsOfFile: "\(run)/ingress-1.yaml", encoding: .utf8)
        #expect(nodeConfig.contains("password_hash: \"$scrypt$") && !nodeConfig.contains(password), "only the hash is configured")

        // The printed commands: "  try     swaks --server ADDRESS ...", split at spaces (nothing in them is quoted).
        let printed = output.split(separator: "\n").compactMap { line -> [String]? in
            let words = line.split(separator: " ").map(String.init)
            return words.count > 2 && words[0] == "try" && words[1] == "swaks" ? Array(words.dropFirst(2)) : nil
        }
        func command(_ address: String, _ flag: String) throws -> [String] {
            try #require(printed.first { $0.starts(with: ["--server", address]) && $0.contains(flag) }, "swaks \(flag) for \(address) in:\n\(output)")
        }
        let swaksPath = try findExecutable("swaks")
        func swaks(_ arguments: [String]) async throws -> CommandResult {
            try await runCommand(swaksPath, arguments + ["--header", "Subject: over TLS", "--body", "hello TLS"])
        }

        let startTLS = try await swaks(try command(endpoints.smtp, "--tls"))
        #expect(startTLS.status == 0, "\(startTLS.output)\(startTLS.errors)")
        #expect(startTLS.output.contains("<-  220 2.0.0 Ready to start TLS") && startTLS.output.contains("=== TLS started with cipher"),
                "\(startTLS.output)")
        #expect(startTLS.output.contains("<~  250 2.0.0 Ok: queued as"), "250 inside TLS: \(startTLS.output)")

        let submission = try command(endpoints.submission, "--auth-user")
        #expect(submission.contains("--tls") && submission.contains(endpoints.login.username) && submission.contains(password))
        let loggedIn = try await swaks(submission)
        #expect(loggedIn.status == 0, "\(loggedIn.output)\(loggedIn.errors)")
        #expect(loggedIn.output.contains("<~  235 2.7.0 Authentication successful"), "\(loggedIn.output)")
        #expect(loggedIn.output.contains("<~  250 2.0.0 Ok: queued as"), "\(loggedIn.output)")

        // Before TLS, no AUTH: swaks finds none advertised (exit 28, an AUTH error) and sends no password.
        let plaintext = try await swaks(submission.filter { $0 != "--tls" })
        #expect(plaintext.status == 28, "\(plaintext.output)\(plaintext.errors)")
        #expect(plaintext.errors.contains("Host did not advertise authentication"), "\(plaintext.errors)")
        #expect(plaintext.output.contains("STARTTLS") && !plaintext.output.contains("AUTH PLAIN"), "\(plaintext.output)")
        let port = try #require(endpoints.submission.split(separator: ":").last.flatMap { Int($0) })
        let credentials = Data("\0\(endpoints.login.username)\0\(password)".utf8).base64EncodedString()
        let handSent = String(decoding: Loopback.exchange(port: port, request: Array("EHLO c\r\nAUTH PLAIN \(credentials)\r\nQUIT\r\n".utf8),
                                                          timeout: .seconds(10)) {
            String(decoding: $0, as: UTF8.self).contains("221 ")
        } ?? [], as: UTF8.self)
        #expect(handSent.contains("530 5.7.0 Must issue a STARTTLS command first\r\n"), "\(handSent)")
        #expect(!handSent.contains("235 "), "\(handSent)")

        // Inside TLS but without a login: not relayed, although 127.0.0.1 is demo's trusted network.
        let anonymous = try await swaks(Array(submission.prefix { $0 != "--auth" } + submission.drop { $0 != "--from" }))
        #expect(anonymous.status == 24, "\(anonymous.output)\(anonymous.errors)")
        #expect(anonymous.output.contains("<~* 554 5.7.1 Relay access denied"), "\(anonymous.output)")

        // Implicit TLS: the handshake comes before the greeting.
        let implicit = try await swaks(try command(endpoints.smtps, "--tlsc"))
        #expect(implicit.status == 0, "\(implicit.output)\(implicit.errors)")
        let handshake = implicit.output.range(of: "=== TLS started with cipher")
        let greeting = implicit.output.range(of: "<~  220 ")
        #expect(handshake != nil && greeting != nil && handshake!.lowerBound < greeting!.lowerBound, "\(implicit.output)")
        #expect(implicit.output.contains("<~  235 2.7.0 Authentication successful"), "\(implicit.output)")
        #expect(implicit.output.contains("<~  250 2.0.0 Ok: queued as"), "\(implicit.output)")
    }

    /// cluster/status, in the same run directory: every process of endpoints.json is running and
    /// every node ready (exit 0); after the sink is killed it is named dead (exit 1).
    func checkStatus(run: String, endpoints: Endpoints) async throws {
        func status(_ arguments: String...) async throws -> CommandResult {
            try await runCommand("/usr/bin/env", ["SMARTHOST_RUN_DIR=\(run)", "\(repositoryRoot)/cluster/status"] + arguments)
        }
        let recorded = endpoints.processes.merging(endpoints.nodes.map { ($0.id, $0.pid) }) { first, _ in first }

        let text = try await status()
        #expect(text.status == 0, "cluster/status: \(text.output)\(text.errors)")
        #expect(text.output.contains("smtp: \(endpoints.smtp)"), "\(text.output)")
        #expect(text.output.contains("all \(recorded.count) processes running"), "\(text.output)")
        let json = try await status("--json")
        #expect(json.status == 0, "cluster/status --json: \(json.output)\(json.errors)")
        let listed = try JSONDecoder().decode(Status.self, from: Data(json.output.utf8))
        #expect(listed.smtp == endpoints.smtp && listed.submission == endpoints.submission && listed.smtps == endpoints.smtps)
        #expect(text.output.contains("submission: \(endpoints.submission)\nsmtps: \(endpoints.smtps)\n"), "\(text.output)")
        #expect(listed.dead.isEmpty)
        for (name, pid) in recorded {
            let process = listed.processes.first { $0.name == name }
            #expect(process?.state == "running" && process?.pid == pid, "\(name) (pid \(pid)) in \(json.output)")
        }
        for node in endpoints.nodes {
            #expect(listed.processes.first { $0.name == node.id }?.ready == true, "\(node.id) /ready in \(json.output)")
        }

        let sink = try #require(endpoints.processes["sink"])
        #expect(kill(sink, SIGKILL) == 0)
        var afterKill = try await status("--json")
        for _ in 0..<50 where afterKill.status == 0 {  // until the kernel has taken it down
            try await Task.sleep(for: .milliseconds(100))
            afterKill = try await status("--json")
        }
        #expect(afterKill.status == 1, "cluster/status after the sink was killed: \(afterKill.output)\(afterKill.errors)")
        let dead = try JSONDecoder().decode(Status.self, from: Data(afterKill.output.utf8))
        #expect(dead.dead == ["sink"], "\(afterKill.output)")
        #expect(dead.processes.filter { $0.state == "running" }.count == recorded.count - 1, "\(afterKill.output)")
        let deadText = try await status()
        #expect(deadText.status == 1)
        #expect(deadText.output.contains("1 of \(recorded.count) processes dead: sink"), "\(deadText.output)")
    }
}
