import Events
import Foundation
import QueueRecord
import SMTPProtocol
import Testing
import TestSupport

/// A delivery node resolving MX records against a real DNS server (dnsmasq) on loopback, with
/// real SMTP destinations on 127.0.0.x sharing one port, as MX hosts share port 25.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct MXDeliveryTests {
    @Test func mxPreferenceFallbackNullMXAndNXDOMAINAndTheSendersDSN() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let port = try Loopback.freePort()
        // 127.0.0.2 is mx-a.pref.test, preferred but not listening: pref.test falls back to mx-b.
        let mxB = try await ScriptedSMTPServer.start(host: "127.0.0.3", port: port)
        defer { mxB.stop() }
        let primary = try await ScriptedSMTPServer.start(host: "127.0.0.4", port: port)
        defer { primary.stop() }
        let equalOne = try await ScriptedSMTPServer.start(host: "127.0.0.5", port: port)
        defer { equalOne.stop() }
        let equalTwo = try await ScriptedSMTPServer.start(host: "127.0.0.6", port: port)
        defer { equalTwo.stop() }
        let mailbox = try await ScriptedSMTPServer.start()
        defer { mailbox.stop() }
        var records = DNSServer.Records()
        records.mx = [("pref.test", "mx-a.pref.test", 10), ("pref.test", "mx-b.pref.test", 20),
                      ("ok.test", "primary.ok.test", 10), ("ok.test", "mx-b.pref.test", 20),
                      ("equal.test", "one.equal.test", 10), ("equal.test", "two.equal.test", 10)]
        records.a = [("mx-a.pref.test", "127.0.0.2"), ("mx-b.pref.test", "127.0.0.3"), ("primary.ok.test", "127.0.0.4"),
                     ("one.equal.test", "127.0.0.5"), ("two.equal.test", "127.0.0.6"), ("plain.test", "127.0.0.4")]
        records.nullMX = ["null.test"]
        let dns = try await DNSServer.start(records)
        defer { dns.stop() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-mx", yaml: """
            traffic_classes:
              fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 30s}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast}
            routes:
              - {domain: acme.test, next_hop: "127.0.0.1:\(mailbox.port)"}
            ingress: {hostname: relay.acme.test}
            dns: {resolvers: ["\(dns.address)"], timeout: 2s}
            delivery: {smtp_port: \(port), connect_timeout: 1s, command_timeout: 5s, max_messages_per_connection: 1}
            """)
        defer { node.stop() }

        let fallback = testMessage(to: ["a@pref.test"])
        let preferred = testMessage(to: ["b@ok.test"])
        let implicit = testMessage(to: ["c@plain.test"])
        let shared = (0..<20).map { testMessage(to: ["user\($0)@equal.test"]) }
        let nullMX = testMessage(to: ["d@null.test"], subject: "to a domain without mail")
        var fromNobody = testMessage(to: ["e@absent.test"])
        fromNobody.sender = nil
        let absent = testMessage(to: ["f@absent.test"])
        let literal = testMessage(to: ["g@[127.0.0.4]"])
        try await enqueue([fallback, preferred, implicit, nullMX, fromNobody, absent, literal] + shared, broker: broker)

        func events(_ message: AcceptedMessage) throws -> [MessageEvent] { try node.events().filter { $0.id == message.id.text } }
        let all = [fallback, preferred, implicit, nullMX, fromNobody, absent, literal] + shared
        let settled = try await eventually(.seconds(60)) {
            try all.allSatisfy { message in try events(message).contains { [.delivery, .bounce, .expiration].contains($0.type) } }
                && mailbox.messages().count >= 2
        }
        #expect(settled, "every message reached a final outcome; log:\n\(node.process.logTail())\nDNS: \(dns.queries().suffix(20))")

        // Preference order and fallback, observed at the destinations.
        #expect(try events(fallback).last?.type == .delivery)
        #expect(try mxB.messages().map(\.recipients) .contains(["a@pref.test"]), "pref.test fell back to its MX 20")
        #expect(try primary.messages().map(\.recipients).contains(["b@ok.test"]), "ok.test went to its MX 10")
        #expect(try !mxB.messages().map(\.recipients).contains(["b@ok.test"]))
        #expect(try primary.messages().map(\.recipients).contains(["c@plain.test"]), "no MX: the domain's own address")
        #expect(try primary.messages().map(\.recipients).contains(["g@[127.0.0.4]"]), "an address literal: that host, no DNS")
        #expect(try events(preferred).last?.site == "primary.ok.test,mx-b.pref.test")
        // Equal preferences share the load.
        let one = try equalOne.messages().count, two = try equalTwo.messages().count
        #expect(one + two == 20 && one > 0 && two > 0, "equal-preference MX hosts both used: \(one) and \(two)")
        print("MX: equal-preference hosts received \(one) and \(two) of 20 messages; pref.test fell back to its MX 20")
        #expect(try Set(shared.flatMap { try events($0) }.compactMap(\.site)) == ["one.equal.test,two.equal.test"])

        // A null MX and a domain that does not exist bounce at once.
        #expect(try events(nullMX).map(\.type) == [.bounce])
        #expect(try events(nullMX).first?.response?.enhanced == "5.1.10")
        #expect(try events(absent).map(\.type) == [.bounce] && events(absent).first?.response?.enhanced == "5.1.2")
        #expect(try events(fromNobody).map(\.type) == [.bounce])

        // The senders hear of it: one DSN each, none for the null sender, through the queues
        // like any message (here, acme.test's route).
        #expect(try await eventually(.seconds(10)) { try mailbox.messages().count == 2 })
        try await Task.sleep(for: .seconds(2))
        let notifications = try mailbox.messages()
        #expect(notifications.count == 2, "one DSN per bounced message with a sender")
        #expect(notifications.allSatisfy { $0.sender == "" && $0.recipients == ["app@acme.test"] })
        #expect(try events(nullMX).first?.dsn != nil && events(fromNobody).first?.dsn == nil)
        let parsed = try await Self.parse(mailbox, notifications.first { (try? mailbox.content(of: $0))?.contains(Array("d@null.test".utf8)) == true })
        #expect(parsed["report_type"] as? String == "delivery-status")
        #expect((parsed["defects"] as? [Any])?.isEmpty == true, "\(parsed["defects"] ?? "")")
        let recipient = (parsed["per_recipient"] as? [[String: Any]])?.first
        #expect(recipient?["Action"] as? String == "failed" && recipient?["Status"] as? String == "5.1.10")
        #expect((recipient?["Final-Recipient"] as? String)?.hasSuffix("d@null.test") == true)
        let original = (parsed["original_headers"] as? [[String]]) ?? []
        #expect(original.contains(["Subject", "to a domain without mail"]), "the original headers are attached")
    }

    @Test func aResolverTimeoutIsRetriedUntilDNSAnswers() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let port = try Loopback.freePort()
        let destination = try await ScriptedSMTPServer.start(host: "127.0.0.7", port: port)
        defer { destination.stop() }
        // A port free for TCP too, where dnsmasq will listen later.
        let silent = try SilentUDPPort(port: try Loopback.freePort())
        defer { silent.close() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-dns-timeout", yaml: """
            traffic_classes:
              fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 60s}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast}
            dns: {resolvers: ["\(silent.address)"], timeout: 300ms, failure_ttl: 1s}
            delivery: {smtp_port: \(port), send_dsn: false}
            """)
        defer { node.stop() }
        let message = testMessage(to: ["late@slow.test"])
        try await enqueue([message], broker: broker)
        func types() throws -> [MessageEvent.Kind] { try node.events().filter { $0.id == message.id.text }.map(\.type) }
        #expect(try await eventually(.seconds(30)) { try types().count >= 2 }, "log:\n\(node.process.logTail())")
        #expect(try types().allSatisfy { $0 == .transientFailure })
        #expect(try node.events().first { $0.id == message.id.text }?.response?.enhanced == "4.4.3")

        // The resolver comes back on the same port: the next retry finds the MX and delivers.
        silent.close()
        var records = DNSServer.Records()
        records.mx = [("slow.test", "mx.slow.test", 10)]
        records.a = [("mx.slow.test", "127.0.0.7")]
        let dns = try await DNSServer.start(records, port: silent.port)
        defer { dns.stop() }
        #expect(try await eventually(.seconds(30)) { try types().last == .delivery }, "log:\n\(node.process.logTail())")
        #expect(try destination.messages().count == 1)
    }

    @Test func aMessageStillRetriedAfterDelayNoticeAfterSendsOneDelayNotice() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let busy = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "rcpt", "reply": "451 4.3.0 Mailbox busy"}]}"#)
        defer { busy.stop() }
        let mailbox = try await ScriptedSMTPServer.start()
        defer { mailbox.stop() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-delay-notice", yaml: """
            traffic_classes:
              fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 1h}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast}
            routes:
              - {domain: busy.test, next_hop: "127.0.0.1:\(busy.port)"}
              - {domain: acme.test, next_hop: "127.0.0.1:\(mailbox.port)"}
            ingress: {hostname: relay.acme.test}
            delivery: {delay_notice_after: 2s, command_timeout: 5s}
            """)
        defer { node.stop() }
        let message = testMessage(to: ["someone@busy.test"], subject: "still trying")
        try await enqueue([message], broker: broker)
        func events() throws -> [MessageEvent] { try node.events().filter { $0.id == message.id.text } }
        // Attempts every second: the ones after 2 s are past the notice threshold.
        #expect(try await eventually(.seconds(30)) { try events().count >= 6 }, "log:\n\(node.process.logTail())")
        #expect(try events().allSatisfy { $0.type == .transientFailure })
        let notices = try mailbox.messages()
        #expect(notices.count == 1, "one delay notice however many retries follow")
        #expect(notices.first?.sender == "" && notices.first?.recipients == ["app@acme.test"])
        let marked = try events().compactMap(\.dsn)
        #expect(Set(marked).count == 1 && marked.count == 1, "the event of the attempt that sent it names it")
        let parsed = try await Self.parse(mailbox, notices.first)
        #expect((parsed["defects"] as? [Any])?.isEmpty == true, "\(parsed["defects"] ?? "")")
        let recipient = (parsed["per_recipient"] as? [[String: Any]])?.first
        #expect(recipient?["Action"] as? String == "delayed" && recipient?["Status"] as? String == "4.3.0")
        #expect(recipient?["Will-Retry-Until"] != nil)
        #expect((parsed["subject"] as? String)?.contains("Delayed") == true)
    }

    static func parse(_ server: ScriptedSMTPServer, _ record: ScriptedSMTPServer.Record?) async throws -> [String: Any] {
        guard let record, let path = record.dataPath else { return [:] }
        let script = URL(fileURLWithPath: ScriptedSMTPServer.scriptPath).deletingLastPathComponent().appendingPathComponent("parse_dsn.py").path
        let result = try await runCommand("/usr/bin/python3", [script, path])
        return (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]) ?? ["error": result.errors]
    }
}
