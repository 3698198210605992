import Events
import Foundation
import NodeHTTP
import Operations
import QueueRecord
import Testing
import TestSupport

/// `smarthostctl` against a running cluster of real processes: Tansu, Redis, two delivery nodes
/// sharing the tenant's partitions, a scripted destination that can be held down, and a sink for
/// the DSNs. Every command works on real queued mail and is checked against the destination,
/// the nodes' event logs and the spools (read with sqlite3, not through the nodes).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct OperatorCLITests {
    /// Retries ten minutes apart: deferred mail stays deferred for the whole test unless retried.
    static func nodeYAML(destination: Int, notices: Int) -> String {
        """
        traffic_classes:
          slow: {first_retry: 10m, retry_multiplier: 1, max_retry_interval: 10m, expiry: 1h}
        tenants:
          acme: {trusted_networks: [127.0.0.0/8]}
        routes:
          - {domain: inbox.test, next_hop: "127.0.0.1:\(destination)"}
          - {domain: bounce.test, next_hop: "127.0.0.1:\(destination)"}
          - {domain: silent.test, next_hop: "127.0.0.1:\(destination)"}
          - {domain: acme.test, next_hop: "127.0.0.1:\(notices)"}
        delivery: {command_timeout: 30s}
        """
    }

    /// Two delivery nodes, the destination (`servers[0]`) and the DSN sink (`servers[1]`).
    struct Rig {
        let cluster: DeliveryCluster
        var broker: TansuBroker { cluster.broker }
        var destination: ScriptedSMTPServer { cluster.servers[0] }
        var notices: ScriptedSMTPServer { cluster.servers[1] }
        var nodes: [DeliveryProcess] { cluster.nodes }

        static func start() async throws -> Rig {
            Rig(cluster: try await DeliveryCluster.start(scripts: [#"{"rules": []}"#, #"{"rules": []}"#], nodes: ["operator-1", "operator-2"]) {
                OperatorCLITests.nodeYAML(destination: $0[0].port, notices: $0[1].port)
            })
        }

        func stop() { cluster.stop() }
        func ctl(_ arguments: [String]) async throws -> CommandResult { try await cluster.ctl(arguments) }
        func summary(_ more: [String] = []) async throws -> ClusterQueueSummary { try await cluster.summary(more) }

        /// Unfinished messages in a node's spool, read from the file itself.
        func spooled(_ node: DeliveryProcess) async throws -> Int {
            let result = try await runCommand("/usr/bin/sqlite3", ["-readonly", "\(node.spoolDirectory)/spool.sqlite", "SELECT count(*) FROM message"])
            try #require(result.status == 0, "sqlite3: \(result.errors)")
            return try #require(Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        }

        /// What the summary counts per node equals what each spool holds (one entry per message:
        /// every test message has one recipient domain).
        func expectSummaryMatchesSpools(_ context: String) async throws {
            let summary = try await summary(["--by", "node"])
            for node in nodes {
                let name = node.process.name
                let counted = summary.nodes.first { $0.node == name }
                let spooled = try await spooled(node)
                #expect(counted?.spooledMessages == spooled && counted?.queuedEntries == spooled && counted?.orphanedMessages == 0,
                        "\(context): \(name) summary \(String(describing: counted)) vs spool \(spooled)")
            }
        }

        func delivered(_ domain: String) throws -> [String] {
            try destination.messages().flatMap { $0.recipients ?? [] }.filter { $0.hasSuffix("@\(domain)") }
        }

        /// Both nodes hold partitions of the tenant topic (so both get mail).
        func waitForAssignments() async throws {
            let assigned = try await eventually(.seconds(60)) {
                nodes.allSatisfy { node in
                    let log = (try? String(contentsOfFile: node.process.logPath, encoding: .utf8)) ?? ""
                    let changes = log.split(separator: "\n").filter { $0.contains("\"assigned ") || $0.contains("\"revoked ") }
                    return changes.last?.contains("assigned smarthost.acme") == true
                }
            }
            try #require(assigned, "both delivery nodes were assigned partitions of smarthost.acme")
        }

        func logs() -> String {
            nodes.map { "\($0.process.name):\n" + ((try? String(contentsOfFile: $0.process.logPath, encoding: .utf8)) ?? "").suffix(3_000) }
                .joined(separator: "\n")
        }
    }

    /// `count` messages to `batch-N@domain`: each batch its own recipients.
    static func messages(_ count: Int, domain: String, batch: String) -> [AcceptedMessage] {
        (0..<count).map { testMessage(to: ["\(batch)-\($0)@\(domain)"], trafficClass: "slow") }
    }

    @Test func pauseResumeRetryAndDeleteOnRealQueuedMail() async throws {
        let rig = try await Rig.start()
        defer { rig.stop() }
        try await rig.waitForAssignments()

        // Pause: every node keeps the domain's mail in its scheduled queues, unattempted.
        let pause = try await rig.ctl(["queue", "pause", "--domain", "inbox.test", "--reason", "operator test"])
        #expect(pause.status == 0 && pause.output.contains("paused: domain=inbox.test"), "\(pause.output)\(pause.errors)")
        let suspensions = try await rig.ctl(["suspend", "list", "--json"])
        #expect(suspensions.status == 0 && suspensions.output.contains("\"id\" : \"suspend domain=inbox.test\""), "\(suspensions.output)")
        let seen = try await eventually(.seconds(10)) { rig.nodes.allSatisfy { $0.metric("smarthost_throttle_adjustments") == 1 } }
        try #require(seen, "both nodes see the pause")
        let paused = Self.messages(100, domain: "inbox.test", batch: "paused")
        try await enqueue(paused, broker: rig.broker)
        let allSuspended = try await eventuallyAsync(.seconds(30)) { try await rig.summary().total.suspended == 100 }
        #expect(allSuspended, "100 entries suspended; logs:\n\(rig.logs())")
        let perNode = try await rig.summary(["--by", "node"])
        #expect(perNode.rows.count == 2 && perNode.rows.allSatisfy { $0.suspended > 0 }, "both nodes hold paused mail: \(perNode.rows)")
        try await rig.expectSummaryMatchesSpools("paused")
        try await Task.sleep(for: .seconds(3))
        #expect(try rig.delivered("inbox.test").isEmpty, "nothing delivered while paused")

        // Resume: the paused mail goes.
        let resume = try await rig.ctl(["queue", "resume", "--domain", "inbox.test"])
        #expect(resume.status == 0, "\(resume.output)\(resume.errors)")
        let resumed = try await eventually(.seconds(30)) { try rig.delivered("inbox.test").count == 100 }
        let afterResume = try rig.delivered("inbox.test").count
        #expect(resumed, "100 delivered after the resume, got \(afterResume); logs:\n\(rig.logs())")
        let notAgain = try await rig.ctl(["queue", "resume", "--domain", "inbox.test"])
        #expect(notAgain.status == 1 && notAgain.errors.contains("no adjustment suspend domain=inbox.test in force"), "\(notAgain.errors)")

        // Retry: deferred mail (next attempt in 10 minutes) goes at once once the destination is back.
        try rig.destination.replaceScript(#"{"rules": [{"when": "rcpt", "domain": "inbox.test", "reply": "451 4.3.0 held down for the test"}]}"#)
        try await Task.sleep(for: .milliseconds(500))
        let deferredMail = Self.messages(100, domain: "inbox.test", batch: "deferred")
        try await enqueue(deferredMail, broker: rig.broker)
        let allDeferred = try await eventuallyAsync(.seconds(60)) { try await rig.summary().total.deferred == 100 }
        #expect(allDeferred, "100 deferred; logs:\n\(rig.logs())")
        try await rig.expectSummaryMatchesSpools("deferred")
        let listed = try await rig.ctl(["queue", "list", "--domain", "inbox.test", "--state", "deferred", "--limit", "5", "--json"])
        #expect(listed.status == 0 && listed.output.contains("\"matched\" : 100"), "\(listed.output)\(listed.errors)")
        #expect(listed.output.components(separatedBy: "\"state\" : \"deferred\"").count - 1 == 5, "\(listed.output)")
        #expect(listed.output.contains("451 4.3.0 held down for the test"), "\(listed.output)")
        let table = try await rig.ctl(["queue", "summary"])
        #expect(table.status == 0 && table.output.contains("inbox.test") && table.output.contains("451 4.3.0 held down"), "\(table.output)")
        try rig.destination.replaceScript(#"{"rules": []}"#)
        try await Task.sleep(for: .seconds(3))
        #expect(try rig.delivered("inbox.test").count == 100, "deferred mail waits for its next attempt")
        let retry = try await rig.ctl(["queue", "retry", "--domain", "inbox.test", "--json"])
        #expect(retry.status == 0 && retry.output.contains("\"affected\" : 100"), "\(retry.output)\(retry.errors)")
        let retried = try await eventually(.seconds(30)) { try rig.delivered("inbox.test").count == 200 }
        let arrived = Set(try rig.delivered("inbox.test"))
        #expect(retried && arrived.count == 200, "all 200 arrived once: \(arrived.count); logs:\n\(rig.logs())")

        // Delete: counted first, confirmed, then with a DSN (bounce) or without (silent).
        try rig.destination.replaceScript(#"{"rules": [{"when": "rcpt", "reply": "451 4.3.0 held down for the test"}]}"#)
        try await Task.sleep(for: .milliseconds(500))
        try await enqueue(Self.messages(40, domain: "bounce.test", batch: "bounce") + Self.messages(40, domain: "silent.test", batch: "silent"),
                          broker: rig.broker)
        let eightyDeferred = try await eventuallyAsync(.seconds(60)) { try await rig.summary().total.deferred == 80 }
        #expect(eightyDeferred, "80 deferred; logs:\n\(rig.logs())")
        // Hostile requests to the admin API itself: a precise 400 each, and nothing changes.
        let hostile: [(String, String, String, String)] = [
            ("POST", "/admin/queue/delete", #"{"filter": {"domian": "bounce.test"}, "mode": "silent"}"#, "unknown filter key domian"),
            ("POST", "/admin/queue/delete", #"{"filter": {}, "mode": "silent""#, "expected a JSON object"),
            ("POST", "/admin/queue/delete", #"{"filter": {"domain": "bounce.test"}}"#, "a delete needs"),
            ("POST", "/admin/queue/retry", #"{"filter": {}, "limit": -1}"#, "limit must be from 1 to 100000, got -1"),
            ("POST", "/admin/queue/retry", #"{"filter": {}, "mode": "bounce"}"#, "unknown key mode"),
            ("GET", "/admin/queue/messages?limit=0", "", "limit must be from 1 to 100000, got 0"),
            ("GET", "/admin/queue/summary?state=gone", "", "state must be one of"),
            ("GET", "/admin/queue/summary?tenant=%00", "", "tenant must be 1 to 255 characters"),
        ]
        for (method, path, body, refusal) in hostile {
            let (status, answer) = try await AdminClient.request("127.0.0.1:\(rig.nodes[0].adminPort)", method: method, path: path,
                                                                 token: DeliveryProcess.adminToken, body: Array(body.utf8))
            let text = String(decoding: answer, as: UTF8.self)
            #expect(status == 400 && text.contains("\"error\"") && text.contains(refusal), "\(method) \(path) \(body): \(status) \(text)")
        }
        let (unauthorized, _) = try await AdminClient.request("127.0.0.1:\(rig.nodes[0].adminPort)", method: "POST", path: "/admin/queue/delete",
                                                              token: "wrong-token-0123456789", body: Array(#"{"filter": {}, "mode": "silent"}"#.utf8))
        #expect(unauthorized == 401)
        #expect(try await rig.summary().total.deferred == 80, "no hostile request changed anything")
        let dryRun = try await rig.ctl(["queue", "delete", "--bounce", "--domain", "bounce.test", "--dry-run"])
        #expect(dryRun.status == 0 && dryRun.errors.contains("40 entries to be deleted (bounce) on 2 nodes"), "\(dryRun.output)\(dryRun.errors)")
        let unconfirmed = try await rig.ctl(["queue", "delete", "--bounce", "--domain", "bounce.test"])
        #expect(unconfirmed.status == 1 && unconfirmed.errors.contains("not confirmed: nothing changed"), "\(unconfirmed.errors)")
        #expect(try await rig.summary().total.deferred == 80, "neither a dry run nor an unconfirmed delete changes anything")
        let bounced = try await rig.ctl(["queue", "delete", "--bounce", "--domain", "bounce.test", "--yes", "--json"])
        #expect(bounced.status == 0 && bounced.output.contains("\"affected\" : 40"), "\(bounced.output)\(bounced.errors)")
        let dsns = try await eventually(.seconds(30)) { try rig.notices.messages().count == 40 }
        let noticeCount = try rig.notices.messages().count
        #expect(dsns, "40 DSNs at the sender's domain, got \(noticeCount); logs:\n\(rig.logs())")
        for notice in try rig.notices.messages() {
            let text = String(decoding: try rig.notices.content(of: notice), as: UTF8.self)
            #expect(notice.sender == "" && notice.recipients == ["app@acme.test"] && text.contains("multipart/report")
                    && text.contains("Status: 5.0.0") && text.contains("Deleted from the queue") && text.contains("@bounce.test"), "\(text)")
        }
        let silent = try await rig.ctl(["queue", "delete", "--silent", "--domain", "silent.test", "--yes"])
        #expect(silent.status == 0 && silent.output.contains("40 entries deleted (silent), 40 recipients"), "\(silent.output)\(silent.errors)")
        let events = try rig.nodes.flatMap { try $0.events() }
        let adminBounces = events.filter { $0.type == .adminBounce }
        let adminDeletes = events.filter { $0.type == .adminDelete }
        #expect(adminBounces.count == 40 && adminBounces.allSatisfy { $0.recipient?.hasSuffix("@bounce.test") == true && $0.dsn != nil })
        #expect(adminDeletes.count == 40 && adminDeletes.allSatisfy { $0.recipient?.hasSuffix("@silent.test") == true && $0.dsn == nil })
        try await Task.sleep(for: .seconds(3))
        #expect(try rig.notices.messages().count == 40, "a silent delete sends nothing")
        let drained = try await eventuallyAsync(.seconds(30)) { try await rig.summary().total.queued == 0 }
        #expect(drained, "nothing left queued")
        try await rig.expectSummaryMatchesSpools("after the deletes")
        #expect(try rig.delivered("bounce.test").isEmpty && rig.delivered("silent.test").isEmpty)

        // A node that does not answer is named, and the command fails.
        rig.nodes[1].process.signal(SIGKILL)
        let partial = try await rig.ctl(["queue", "summary"])
        #expect(partial.status == 1 && partial.output.contains("NOT ANSWERING: operator-2"), "\(partial.output)\(partial.errors)")
    }

    @Test(arguments: [
        (["queue", "summary", "--by", "tenant,colour"], "--by takes distinct columns of tenant, domain, pool, node"),
        (["queue", "summary", "--by", "domain,domain"], "--by takes distinct columns"),
        (["queue", "summary", "--sort", "size"], "--sort must be one of queued, oldest, deferred, in-flight, suspended, got size"),
        (["queue", "list", "--limit", "0"], "--limit must be from 1 to 100000, got 0"),
        (["queue", "list", "--state", "frozen"], "--state must be one of scheduled, deferred, suspended, ready, in-flight, held, limbo, got frozen"),
        (["queue", "list", "--age-min", "yesterday"], "--age-min:"),
        (["queue", "retry", "--tenant", "a b"], "tenant must be 1 to 255 characters without spaces"),
        (["queue", "delete", "--domain", "x.test"], "give exactly one of --bounce and --silent"),
        (["queue", "delete", "--bounce", "--silent"], "give exactly one of --bounce and --silent"),
        (["queue", "pause"], "an adjustment needs at least one of pool, site, domain, tenant: give --tenant, --domain or --pool"),
        (["queue", "pause", "--domain", "x.test", "--for", "90d"], "--for: expected 1s to 30d, got 90d"),
        (["throttle", "set", "--action", "slow", "--for", "1h", "--domain", "x.test"], "--action: expected suspend, message_rate or max_connections, got slow"),
        (["diagnose", "--min-entries", "0"], "--min-entries must be at least 1"),
        (["reconcile", "report", "--format", "xml"], "--format must be table, json or csv, got xml"),
        (["ledger", "--format", "JSON"], "--format must be table, json or csv, got JSON"),
        (["queue", "summary", "frobnicate"], "Unexpected argument 'frobnicate'"),
    ])
    func badArgumentsGetAClearErrorAndChangeNothing(_ arguments: [String], _ message: String) async throws {
        // A configuration that loads but names no reachable Redis: a bad argument must be refused first.
        let config = NSTemporaryDirectory() + "ctl-\(UUID().uuidString.prefix(8)).yaml"
        try """
            node: {id: ctl, admin_token: test-admin-token-0123456789}
            kafka: {brokers: ["127.0.0.1:1"]}
            redis: {address: "127.0.0.1:1"}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let result = try await runCommand(SmarthostCLITests.ctl, arguments + ["--config", config])
        #expect(result.status == 64, "\(arguments): \(result.status) \(result.output)\(result.errors)")
        #expect(result.errors.contains(message), "\(arguments): \(result.errors)")
    }

    @Test func aMissingOrBrokenConfigurationIsNamed() async throws {
        let missing = try await runCommand(SmarthostCLITests.ctl, ["nodes", "--config", "/nonexistent/cluster.yaml"])
        #expect(missing.status == 2 && missing.errors.contains("/nonexistent/cluster.yaml"), "\(missing.errors)")
        let unreachable = NSTemporaryDirectory() + "ctl-\(UUID().uuidString.prefix(8)).yaml"
        try """
            node: {id: ctl, admin_token: test-admin-token-0123456789}
            kafka: {brokers: ["127.0.0.1:1"]}
            redis: {address: "127.0.0.1:1", connect_timeout: 1s}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8]}
            """.write(toFile: unreachable, atomically: true, encoding: .utf8)
        defer { unlink(unreachable) }
        let noRedis = try await runCommand(SmarthostCLITests.ctl, ["queue", "summary", "--config", unreachable])
        #expect(noRedis.status == 1 && noRedis.errors.contains("redis 127.0.0.1:1"), "\(noRedis.errors)")
    }
}
