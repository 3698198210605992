import Foundation
import QueueRecord
import SMTPProtocol
import SmarthostConfig
import Spool
import Testing
@testable import Delivery

/// The failure branch of recording an outcome, on a real spool that stops working: the entry
/// is never dropped, it waits in limbo with the error, and a sweep that cannot repair it yet
/// says so (and keeps it there).
struct LimboTests {
    static let yaml = """
        node: {id: limbo-test}
        kafka: {brokers: ["127.0.0.1:9"]}
        redis: {address: "127.0.0.1:6379"}
        tenants: {acme: {}}
        delivery: {default_next_hop: "127.0.0.1:9", send_dsn: false}
        """

    @Test func anOutcomeTheSpoolCannotRecordWaitsInLimboAndTheSweepSaysItStillFails() async throws {
        let directory = NSTemporaryDirectory() + "limbo-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = try SmarthostConfiguration.parse(yaml: Self.yaml, fileName: "t.yaml")
        let spool = try Spool.open(directory: directory + "/spool")
        let events = try EventPublisher(producer: nil, topic: "events", directory: directory, maximumSize: 1 << 20, keep: 1)
        let manager = QueueManager(settings: QueueManager.Settings(configuration: configuration), spool: spool, events: events,
                                   staticRoutes: StaticRoutes(configuration: configuration), mailRouter: nil)
        let message = AcceptedMessage(id: MessageID.generate(), tenant: "acme", sender: Mailbox(localPart: "app", domain: "acme.test"),
                                      recipients: [Mailbox(localPart: "a", domain: "x.test"), Mailbox(localPart: "b", domain: "x.test")],
                                      receivedAt: MessageID.currentMilliseconds(), client: "192.0.2.1:1", helo: "h", trafficClass: "bulk",
                                      content: Array("Subject: t\r\n\r\nbody\r\n".utf8))
        #expect(try await spool.insert(message, position: nil))
        let spooled = try #require(try spool.message(message.id))
        let entry = try #require(await manager.entries(of: spooled).first)

        spool.close()
        let delivered = SMTPReply(250, EnhancedStatusCode(2, 0, 0), "ok")
        await manager.record(entry, outcomes: [.delivered(delivered), .transientFailure(SMTPReply(451, nil, "later"))],
                             attempt: QueueManager.Attempt(site: nil, peer: "192.0.2.9:25", tls: false), tried: true, classify: true)
        let limbo = await manager.queues.limboEntries
        #expect(limbo.count == 1 && limbo.first?.reason.contains("closed") == true, "\(limbo)")
        #expect(limbo.first?.unrecordedFinals == [Mailbox(localPart: "a", domain: "x.test")], "a's delivery is remembered for the retry")
        #expect(limbo.first?.entry.recipients == [Mailbox(localPart: "b", domain: "x.test")], "b still to deliver")
        #expect(limbo.first?.events.map(\.type) == [.delivery, .transientFailure], "the events wait with the outcome")
        #expect(await manager.queues.location(of: entry.key) == .limbo)

        let report = await manager.sweep(trigger: "request", grace: .seconds(1))
        #expect(report.limboRetried == 1 && report.limboRepaired == 0)
        #expect(report.orphans.first?.repaired == false && report.orphans.first?.error?.contains("closed") == true)
        #expect(!report.errors.isEmpty, "the spool pages could not be read either, and the report says so")
        #expect(await manager.counts.limbo == 1, "still in limbo, never dropped")
    }
}
