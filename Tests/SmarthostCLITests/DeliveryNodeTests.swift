import Events
import Foundation
import Kafka
import QueueRecord
import Testing
import TestSupport

/// A real `smarthost delivery` process between a real Kafka-protocol broker and real SMTP
/// destinations scripted to misbehave, on a compressed retry schedule (1 s, no growth).
@Suite(.serialized, .timeLimit(.minutes(5)))
struct DeliveryNodeTests {
    static func configuration(routes: [(domain: String, port: Int, requireTLS: Bool)], expiry: String = "30s") -> String {
        """
        traffic_classes:
          fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: \(expiry)}
        tenants:
          acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast, pool: outbound}
        pools:
          outbound: {ehlo_name: relay.acme.test}
          dedicated: {ehlo_name: dedicated.acme.test}
        routes:
        \(routes.map { "  - {domain: \($0.domain), next_hop: \"127.0.0.1:\($0.port)\", require_tls: \($0.requireTLS)}" }.joined(separator: "\n"))
        delivery:
          command_timeout: 5s
          connect_timeout: 2s
        """
    }

    static func createTopics(_ broker: TansuBroker, tenants: [String] = ["acme"]) async throws {
        let admin = try KafkaAdmin(bootstrapServers: [broker.bootstrap])
        for topic in ["smarthost-events"] + tenants.map({ "smarthost.\($0)" }) {
            try await admin.createTopic(topic, partitions: 3)
        }
    }

    @Test func eachScriptedBehaviourHasItsOutcome() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await Self.createTopics(broker)
        let certificate = try await TestCertificate.make(commonName: "destination.test")
        let plain = try await ScriptedSMTPServer.start(script: """
            {"rules": [
              {"when": "rcpt", "address": "retry@retry.test", "times": 2, "reply": "451 4.3.0 try again later"},
              {"when": "rcpt", "domain": "bounce.test", "reply": "550 5.1.1 no such user"},
              {"when": "data_end", "address": "cut@middata.test", "times": 1, "action": "disconnect_mid_data"}
            ]}
            """)
        defer { plain.stop() }
        let tls = try await ScriptedSMTPServer.start(certificate: certificate)
        defer { tls.stop() }
        let downPort = try Loopback.freePort()
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-scripted", yaml: Self.configuration(routes: [
            ("retry.test", plain.port, false), ("bounce.test", plain.port, false), ("middata.test", plain.port, false),
            ("down.test", downPort, false), ("notls.test", plain.port, true), ("tls.test", tls.port, true),
            ("opportunistic.test", tls.port, false),
        ], expiry: "10s"))
        defer { node.stop() }

        let retry = testMessage(to: ["retry@retry.test"])
        let bounce = testMessage(to: ["gone@bounce.test"])
        let cut = testMessage(to: ["cut@middata.test"])
        let down = testMessage(to: ["someone@down.test"])
        let noTLS = testMessage(to: ["someone@notls.test"])
        let required = testMessage(to: ["someone@tls.test"])
        let opportunistic = testMessage(to: ["someone@opportunistic.test"])
        var ownPool = testMessage(to: ["pooled@retry.test"])
        ownPool.pool = "dedicated"
        try await enqueue([retry, bounce, cut, down, noTLS, required, opportunistic, ownPool], broker: broker)

        func events(_ message: AcceptedMessage) throws -> [MessageEvent] {
            try node.events().filter { $0.id == message.id.text }
        }
        func types(_ message: AcceptedMessage) throws -> [MessageEvent.Kind] { try events(message).map(\.type) }
        let terminal: Set<MessageEvent.Kind> = [.delivery, .bounce, .expiration]
        let settled = try await eventually(.seconds(60)) {
            try [retry, bounce, cut, down, noTLS, required, opportunistic, ownPool].allSatisfy { message in
                try types(message).contains(where: terminal.contains)
            }
        }
        #expect(settled, "every message reached a final outcome; log:\n\(node.process.logTail())")

        // 4xx twice, then 2xx, retried on the schedule.
        #expect(try types(retry) == [.transientFailure, .transientFailure, .delivery])
        let retryEvents = try events(retry)
        #expect(retryEvents.map(\.attempt) == [1, 2, 3])
        #expect(retryEvents.first?.response == MessageEvent.Response(code: 451, enhanced: "4.3.0", text: "try again later"))
        #expect(retryEvents.first?.nextAttemptAt.map { $0 - retryEvents[0].time } ?? 0 >= 900, "the retry waits the class's first_retry")
        #expect(retryEvents.last?.recipient == "retry@retry.test" && retryEvents.last?.queue == "acme//retry.test")
        #expect(retryEvents.last?.site == "127.0.0.1:\(plain.port)" && retryEvents.last?.pool == "outbound")
        #expect(retryEvents.last?.peer == "127.0.0.1:\(plain.port)" && retryEvents.last?.node == "delivery-scripted")

        // 5xx: a Bounce at once, no retry.
        #expect(try types(bounce) == [.bounce])
        #expect(try events(bounce).first?.response?.enhanced == "5.1.1")

        // A disconnect in the middle of DATA: retried, then delivered once.
        #expect(try types(cut) == [.transientFailure, .delivery])

        // Down until expiry: transient failures (the connection's error), then Expiration.
        let downTypes = try types(down)
        #expect(downTypes.last == .expiration && downTypes.dropLast().allSatisfy { $0 == .transientFailure } && downTypes.count >= 2)
        #expect(try events(down).first?.response?.enhanced == "4.4.1")

        // Required TLS: a server without STARTTLS is a transient failure until expiry; one with
        // it is used. Opportunistic TLS is used when offered.
        #expect(try types(noTLS).last == .expiration)
        #expect(try events(noTLS).first?.response?.enhanced == "4.7.10")
        #expect(try events(required).last?.type == .delivery && events(required).last?.tls == true)
        #expect(try events(opportunistic).last?.type == .delivery && events(opportunistic).last?.tls == true)

        // Egress pools: the tenant's by default, the message's own when it names one.
        #expect(try events(ownPool).last?.pool == "dedicated" && events(ownPool).last?.type == .delivery)
        let helloOf = try Dictionary(plain.messages().map { ($0.recipients ?? [], $0.helo ?? "") }, uniquingKeysWith: { a, _ in a })
        #expect(helloOf[["pooled@retry.test"]] == "dedicated.acme.test")
        #expect(helloOf[["gone@bounce.test"]] == nil && helloOf[["retry@retry.test"]] == "relay.acme.test")

        // What the destinations received: each delivered message exactly once, byte for byte.
        let received = try plain.messages() + tls.messages()
        for message in [retry, cut, required, opportunistic] {
            let copies = received.filter { $0.recipients == message.recipients.map(\.description) }
            #expect(copies.count == 1, "\(message.recipients) received \(copies.count) times")
            if let copy = copies.first { #expect(try plain.content(of: copy) == message.content) }
        }
        #expect(received.filter { $0.recipients == ["someone@notls.test"] }.isEmpty, "nothing sent in plaintext when TLS is required")
        #expect(try plain.records().filter { $0.event == "tls" }.isEmpty)

        // Each message's Reception, written as it was spooled, names this node and its record.
        let receptions = try node.events(receptions: true).filter { $0.type == .reception }
        for message in [retry, bounce, cut, down, noTLS, required, opportunistic, ownPool] {
            let mine = receptions.filter { $0.id == message.id.text }
            #expect(mine.count == 1 && mine[0].topic == "smarthost.acme" && mine[0].offset != nil && mine[0].node == "delivery-scripted"
                    && mine[0].time == Int64(message.receivedAt) && mine[0].recipients == message.recipients.map(\.description),
                    "\(mine)")
        }
        // The same events went to the events topic.
        let logged = try node.events(receptions: true).count
        let published = try await readRecords(broker, topic: "smarthost-events", count: logged, timeout: .seconds(30))
        #expect(published.count == logged)
    }

    /// The built-in response rules against the receivers' own words, each site its own
    /// destination so that one suspension does not hide the others.
    @Test func responseRulesDecideWhatRealWorldRepliesMean() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await Self.createTopics(broker)
        let gmail = try await ScriptedSMTPServer.start(script: #"""
            {"rules": [{"when": "rcpt", "reply": "421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of\n421-4.7.28 unsolicited mail originating from your IP address. To protect our\n421 4.7.28 users from spam, mail sent from your IP address has been temporarily rate limited."}]}
            """#)
        defer { gmail.stop() }
        let outlook = try await ScriptedSMTPServer.start(script: #"""
            {"rules": [{"when": "rcpt", "reply": "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775)"}]}
            """#)
        defer { outlook.stop() }
        let greeting = try await ScriptedSMTPServer.start(script: #"""
            {"rules": [{"when": "connect", "reply": "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1"}]}
            """#)
        defer { greeting.stop() }
        let others = try await ScriptedSMTPServer.start(script: #"""
            {"rules": [
              {"when": "rcpt", "domain": "unknown.test", "reply": "550-5.1.1 The email account that you tried to reach does not exist. Please try\n550 5.1.1 double-checking the recipient's email address for typos."},
              {"when": "rcpt", "domain": "grey.test", "reply": "451 4.7.1 Greylisted, see https://postgrey.schweikert.ch/help/grey.test"},
              {"when": "rcpt", "domain": "full.test", "reply": "452 4.2.2 The email account that you tried to reach is over quota."},
              {"when": "rcpt", "domain": "custom.test", "reply": "451 4.3.0 This mailbox is permanently disabled"}
            ]}
            """#)
        defer { others.stop() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-rules", yaml: Self.configuration(routes: [
            ("gmail.test", gmail.port, false), ("outlook.test", outlook.port, false), ("greeting.test", greeting.port, false),
            ("unknown.test", others.port, false), ("grey.test", others.port, false), ("full.test", others.port, false),
            ("custom.test", others.port, false),
        ], expiry: "2h") + """

            response_rules:
              - {name: disabled-means-gone, code: 451, text: "(?i)permanently disabled", action: bounce}
            """)
        defer { node.stop() }
        let messages = ["a@gmail.test", "b@outlook.test", "c@greeting.test", "d@unknown.test", "e@grey.test", "f@full.test",
                        "g@custom.test"].map { testMessage(to: [$0]) }
        try await enqueue(messages, broker: broker)
        func first(_ index: Int) throws -> MessageEvent? { try node.events().first { $0.id == messages[index].id.text } }
        let decided = try await eventually(.seconds(30)) {
            try [0, 1, 3, 4, 5, 6].allSatisfy { try first($0) != nil } && greeting.records().contains { $0.event == "connect" }
        }
        #expect(decided, "log:\n\(node.process.logTail())")
        try await Task.sleep(for: .seconds(3))  // a second attempt would show up here

        // Back off: a transient failure that does not count as an attempt, retried when the
        // suspension ends (15 and 30 minutes), and no further connection meanwhile.
        for (index, rule, minutes) in [(0, "rate-limited-4.7.28", 15), (1, "reputation-4.7.65x", 30)] {
            let event = try #require(try first(index))
            #expect(event.type == .transientFailure && event.rule == rule && event.attempt == 0, "\(event)")
            let wait = (event.nextAttemptAt ?? 0) - event.time
            #expect(wait >= Int64(minutes * 60_000) - 1_000 && wait <= Int64(minutes * 60_000) + 1_000, "\(rule): \(wait) ms")
        }
        #expect(try gmail.records().filter { $0.event == "connect" }.count == 1)
        #expect(try outlook.records().filter { $0.event == "connect" }.count == 1)
        // A 421 at the greeting suspends the site too; the message waits, unattempted.
        #expect(try first(2) == nil && greeting.records().filter { $0.event == "connect" }.count == 1)
        #expect(node.metric("smarthost_delivery_sites_suspended") == 3)
        // 5.1.1: a bounce, by rule.
        #expect(try first(3)?.type == .bounce && first(3)?.rule == "unknown-user")
        // Greylisting and a full mailbox: retried, later than the class's 1 s.
        #expect(try first(4)?.rule == "greylisted" && (first(4)?.nextAttemptAt ?? 0) - (first(4)?.time ?? 0) >= 299_000)
        #expect(try first(5)?.rule == "mailbox-full" && (first(5)?.nextAttemptAt ?? 0) - (first(5)?.time ?? 0) >= 3_599_000)
        // The configuration's own rule comes first: this 451 bounces.
        #expect(try first(6)?.type == .bounce && first(6)?.rule == "disabled-means-gone")
    }

    @Test func aRecordThatIsNotAMessageIsQuarantinedAndTheRestDelivered() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await Self.createTopics(broker)
        let destination = try await ScriptedSMTPServer.start()
        defer { destination.stop() }
        let node = try DeliveryProcess.start(broker: broker, name: "delivery-quarantine",
                                             yaml: Self.configuration(routes: [("dest.test", destination.port, false)]))
        defer { node.stop() }
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: [broker.bootstrap]))
        _ = try await producer.send(OutgoingRecord(topic: "smarthost.acme", key: Array("junk".utf8), value: Array("not a message".utf8),
                                                   headers: [KafkaHeader(name: "sh-format", string: "99")]))
        await producer.close()
        let good = testMessage(to: ["a@dest.test"])
        try await enqueue([good], broker: broker)
        #expect(try await eventually(.seconds(30)) { try destination.messages().count == 1 })
        let quarantined = try await runCommand("/usr/bin/sqlite3", ["\(node.spoolDirectory)/spool.sqlite", "SELECT kafka_topic, reason FROM quarantine"])
        #expect(quarantined.output.contains("smarthost.acme|"), "\(quarantined.output)\(quarantined.errors)")
        // Announced, so the ledger counts the record as taken and names it apart.
        let event = try #require(try node.events().first { $0.type == .quarantined })
        #expect(event.id == "\(event.topic ?? "")/\(event.partition ?? -1)/\(event.offset ?? -1)" && event.topic == "smarthost.acme")
        #expect(event.tenant == "acme" && event.reason?.contains("record format \"99\" is not supported") == true && event.node == "delivery-quarantine", "\(event)")
    }
}
