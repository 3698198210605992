import Foundation
import Kafka
import QueueRecord
import SMTPProtocol
import SMTPServer
import SmarthostConfig
import Testing
import TestSupport
@testable import Ingress

@Suite struct HeaderFieldTests {
    @Test(arguments: [
        ("Subject: a\r\nX-Job: spring-2026\r\n\r\nbody\r\n", "spring-2026"),
        ("x-job:   lower case  \r\n\r\n", "lower case"),
        ("X-Job: folded\r\n  onto two lines\r\nSubject: x\r\n\r\n", "folded  onto two lines"),
        ("X-Job: a\u{1b}[31mred\r\n\r\n", "a[31mred"),
    ])
    func theJobHeaderIsFound(_ message: String, _ value: String) {
        #expect(HeaderField.value(of: "X-Job", in: Array(message.utf8)) == value)
    }

    @Test(arguments: ["Subject: a\r\n\r\nX-Job: in the body\r\n", "X-Jobs: other\r\n\r\n", "X-Job:\r\n\r\n", ""])
    func aJobHeaderOutsideTheHeaderSectionOrEmptyIsNone(_ message: String) {
        #expect(HeaderField.value(of: "X-Job", in: Array(message.utf8)) == nil)
    }
}

@Suite struct ReceivedHeaderTests {
    @Test func theTraceLineNamesClientServerIdAndTheOnlyRecipient() {
        let line = ReceivedHeader.make(helo: "client.test", connection: ConnectionInfo(clientIP: "192.0.2.7", clientPort: 4000),
                                       hostname: "mx.test", id: "01ID", recipients: [Mailbox(localPart: "b", domain: "y.test")],
                                       date: Date(timeIntervalSince1970: 1_795_000_000))
        #expect(String(decoding: line, as: UTF8.self) == "Received: from client.test (192.0.2.7:4000)\r\n\tby mx.test (smarthost) with ESMTP id 01ID\r\n\tfor <b@y.test>; Wed, 18 Nov 2026 11:06:40 +0000\r\n")
    }

    @Test func theDateIsRFC5322InUTC() {
        #expect(ReceivedHeader.rfc5322Date(Date(timeIntervalSince1970: 0)) == "Thu, 1 Jan 1970 00:00:00 +0000")
        #expect(ReceivedHeader.rfc5322Date(Date(timeIntervalSince1970: 1_709_197_507.9)) == "Thu, 29 Feb 2024 09:05:07 +0000")
        #expect(ReceivedHeader.rfc5322Date(Date(timeIntervalSince1970: 1_795_449_600)) == "Mon, 23 Nov 2026 16:00:00 +0000")
    }

    @Test func aHostileHeloCannotBreakTheHeader() {
        let line = ReceivedHeader.make(helo: "x;(evil)\r\nBcc: <victim>", connection: ConnectionInfo(clientIP: "2001:db8::1", clientPort: 25),
                                       hostname: "mx.test", id: "01ID", recipients: [], date: Date(timeIntervalSince1970: 0))
        let text = String(decoding: line, as: UTF8.self)
        #expect(text.hasPrefix("Received: from x__evil___Bcc:__victim_ ([2001:db8::1]:25)\r\n"))
        #expect(text.components(separatedBy: "\r\n").filter { !$0.isEmpty && !$0.hasPrefix("\t") }.count == 1, "one header field")
    }
}

/// The ingress sink against a real Tansu broker.
@Suite(.timeLimit(.minutes(2)))
struct IngressSinkTests {
    func configuration(_ broker: TansuBroker) throws -> SmarthostConfiguration {
        try SmarthostConfiguration.parse(yaml: """
            node: {id: ingress-test}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 3s}
            redis: {address: "127.0.0.1:6379"}
            pools:
              dedicated: {ehlo_name: dedicated.acme.test}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], lane: high, traffic_class: transactional}
            """, fileName: "test.yaml")
    }

    /// A sink producing to `broker`, as an ingress node configured for it would build it.
    func sink(_ broker: TansuBroker) throws -> (IngressSink, KafkaProducer, SmarthostConfiguration) {
        let configuration = try configuration(broker)
        var settings = KafkaProducerConfiguration(bootstrapServers: configuration.kafka.brokers.map(\.description))
        settings.deliveryTimeout = configuration.kafka.deliveryTimeout
        let producer = try KafkaProducer(configuration: settings)
        return (IngressSink(producer: producer, configuration: configuration, hostname: "mx.test"), producer, configuration)
    }

    let envelope = Envelope(helloName: "client.test", sender: Mailbox(localPart: "a", domain: "x.test"),
                            recipients: [Mailbox(localPart: "b", domain: "y.test")], parameters: MailParameters(body: .eightBitMIME))
    let connection = ConnectionInfo(clientIP: "127.0.0.1", clientPort: 5000, tenant: "acme")
    let message = Array("Subject: hello\r\nX-Job: launch\r\n\r\nbody \u{00e9}\r\n".utf8)

    @Test func anAcceptedMessageIsOneRecordInItsTenantsTopicAnd250ComesAfterTheAck() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, _) = try sink(broker)
        let reply = await sink.accept(envelope, message: message, connection: connection)
        #expect(reply.code == 250)
        let id = try #require(reply.lines.first?.split(separator: " ").last.map(String.init))
        await producer.close()

        let record = try #require(try await readRecords(broker, topic: "smarthost.acme", count: 1).first)
        let accepted = try AcceptedMessage(key: record.key, headers: record.headers.map { ($0.name, $0.value) }, value: record.value)
        #expect(accepted.id.text == id)
        #expect(accepted.tenant == "acme" && accepted.lane == .high && accepted.trafficClass == "transactional")
        #expect(accepted.sender == envelope.sender && accepted.recipients == envelope.recipients)
        #expect(accepted.job == "launch" && accepted.eightBit && accepted.client == "127.0.0.1:5000" && accepted.helo == "client.test")
        let text = String(decoding: record.value, as: UTF8.self)
        #expect(text.hasPrefix("Received: from client.test (127.0.0.1:5000)\r\n\tby mx.test (smarthost) with ESMTP id \(id)\r\n"))
        #expect(Array(record.value.suffix(message.count)) == message, "the message follows the trace line byte for byte")

        // No Reception event from here: the ledger learns of the message from the spool that
        // takes this record (ClusterLedgerTests).
    }

    @Test func aStalledBrokerGets451AndNo250() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, _) = try sink(broker)
        #expect(await sink.accept(envelope, message: message, connection: connection).code == 250)
        broker.pause()
        let reply = await sink.accept(envelope, message: message, connection: connection)
        broker.resume()
        #expect(reply.description == "451 4.3.0 Queue temporarily unavailable, try again later")
        await producer.close()
    }

    @Test func trustedNetworksResolveToTheirTenant() throws {
        let configuration = try SmarthostConfiguration.parse(yaml: """
            node: {id: n}
            kafka: {brokers: ["127.0.0.1:9092"]}
            redis: {address: "127.0.0.1:6379"}
            tenants:
              acme: {trusted_networks: [10.1.0.0/16, "2001:db8:ac::/48"]}
              globex: {trusted_networks: [10.0.0.0/8]}
              initech: {}
            """, fileName: "t.yaml")
        let resolve = configuration.trustedNetworkResolver
        #expect(resolve("10.1.2.3")?.name == "acme")
        #expect(resolve("10.2.0.1")?.name == "globex")
        #expect(resolve("2001:db8:ac::5")?.name == "acme")
        #expect(resolve("192.0.2.1") == nil)
        #expect(resolve("not an address") == nil)
    }

    @Test func aMessageChoosesAConfiguredPoolAndAnUnknownPoolIsRefused() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, _) = try sink(broker)
        let unknown = await sink.accept(envelope, message: Array("X-Smarthost-Pool: nowhere\r\n\r\nbody\r\n".utf8), connection: connection)
        #expect(unknown.code == 550 && unknown.enhancedCode == EnhancedStatusCode(5, 7, 1))
        let chosen = await sink.accept(envelope, message: Array("X-Smarthost-Pool: dedicated\r\n\r\nbody\r\n".utf8), connection: connection)
        #expect(chosen.code == 250)
        await producer.close()
        let records = try await readRecords(broker, topic: "smarthost.acme", count: 1, thenWatchFor: .seconds(1))
        #expect(records.count == 1, "only the message with a configured pool is queued")
        let record = try #require(records.first)
        let accepted = try AcceptedMessage(key: record.key, headers: record.headers.map { ($0.name, $0.value) }, value: record.value)
        #expect(accepted.pool == "dedicated")
    }

    @Test func aMessageChoosesItsLaneAndAnUnknownLaneIsRefused() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, _) = try sink(broker)
        for hostile in ["urgent", "HIGH; normal", "hi gh", String(repeating: "h", count: 10_000)] {
            let refused = await sink.accept(envelope, message: Array("X-Smarthost-Lane: \(hostile)\r\n\r\nbody\r\n".utf8), connection: connection)
            #expect(refused.code == 550 && refused.enhancedCode == EnhancedStatusCode(5, 7, 1), "lane \(hostile.prefix(20))")
        }
        let chosen = await sink.accept(envelope, message: Array("X-Smarthost-Lane: Low\r\n\r\nbody\r\n".utf8), connection: connection)
        #expect(chosen.code == 250)
        let plain = await sink.accept(envelope, message: message, connection: connection)
        #expect(plain.code == 250)
        await producer.close()
        let records = try await readRecords(broker, topic: "smarthost.acme", count: 2, thenWatchFor: .seconds(1))
        #expect(records.count == 2, "only the messages with a valid lane are queued")
        let lanes = try records.map {
            try AcceptedMessage(key: $0.key, headers: $0.headers.map { ($0.name, $0.value) }, value: $0.value).lane
        }
        #expect(lanes.sorted { $0.rawValue < $1.rawValue } == [.high, .low], "the header's lane, and the tenant's (high) without it")
    }

    @Test func aConnectionWithoutTenantIsRefused() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, _) = try sink(broker)
        var stranger = connection
        stranger.tenant = nil
        #expect(await sink.accept(envelope, message: message, connection: stranger).code == 554)
        await producer.close()
    }

    @Test func swaksThroughARealListenerLandsInKafka() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let (sink, producer, configuration) = try sink(broker)
        let listener = try await SMTPListener.bind(host: "127.0.0.1", port: 0, policy: SessionPolicy(hostname: "mx.test"), sink: sink,
                                                   resolveTenant: configuration.trustedNetworkResolver)
        let port = try #require(listener.localAddress?.port)
        let result = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(port)", "--pipeline", "--from", "a@x.test", "--to", "b@y.test", "--header", "Subject: via swaks"])
        try await listener.close()
        await producer.close()
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("<-  250 2.0.0 Ok: queued as "))
        let record = try #require(try await readRecords(broker, topic: "smarthost.acme", count: 1).first)
        #expect(String(decoding: record.value, as: UTF8.self).contains("Subject: via swaks\r\n"))
    }
}

@Suite struct SenderDomainTests {
    let allowed = ["acme.example", "mail.acme.example"]

    func message(_ from: String?) -> [UInt8] {
        Array(((from.map { "From: \($0)\r\n" } ?? "") + "Subject: x\r\n\r\nFrom: evil@else.example\r\n").utf8)
    }

    @Test(arguments: [
        (Optional(Mailbox(localPart: "app", domain: "ACME.example")), Optional("App <app@acme.example>"), String?.none),
        (Mailbox(localPart: "app", domain: "mail.acme.example"), "app@Mail.Acme.Example", nil),
        (nil, "\"Mailer, Daemon\" <mailer-daemon@acme.example>", nil),
        (Mailbox(localPart: "app", domain: "other.example"), "app@acme.example", "envelope sender domain other.example is not allowed for this tenant"),
        (Mailbox(localPart: "app", domain: "acme.example"), "Spoof <ceo@bank.example>", "From: header domain bank.example is not allowed for this tenant"),
        (Mailbox(localPart: "app", domain: "acme.example"), "undisclosed", "the From: header has no address"),
        (Mailbox(localPart: "app", domain: "acme.example"), nil, "the message has no From: header"),
    ])
    func senderAndFromMustBeTheTenants(_ sender: Mailbox?, _ from: String?, _ violation: String?) {
        #expect(SenderDomains.violation(sender: sender, message: message(from), allowed: allowed) == violation)
    }

    @Test func aTenantWithoutSenderDomainsMaySendAsAnyone() {
        #expect(SenderDomains.violation(sender: Mailbox(localPart: "a", domain: "x.example"), message: message(nil), allowed: []) == nil)
    }
}
