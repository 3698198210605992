import Foundation
import Kafka
import Redis
import SMTPProtocol
import SMTPServer
import SmarthostConfig
import Testing
import TestSupport
@testable import Ingress

/// The tenant quota held across two ingress sinks (two nodes) by a real Redis, messages going
/// to a real Tansu broker.
@Suite(.timeLimit(.minutes(2)))
struct TenantQuotaTests {
    let envelope = Envelope(helloName: "client.test", sender: Mailbox(localPart: "a", domain: "x.test"),
                            recipients: [Mailbox(localPart: "b", domain: "y.test")])
    let message = Array("Subject: quota\r\n\r\nbody\r\n".utf8)

    func configuration(_ broker: TansuBroker, _ redis: RedisServer) throws -> SmarthostConfiguration {
        try SmarthostConfiguration.parse(yaml: """
            node: {id: quota-test}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s}
            redis: {address: "\(redis.address)", command_timeout: 200ms}
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], message_rate: 3/h}
              globex: {trusted_networks: [10.0.0.0/8]}
            """, fileName: "quota.yaml")
    }

    @Test func aQuotaHoldsAcrossNodesAndRedisDownAdmitsUnchecked() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let configuration = try configuration(broker, redis)
        var settings = KafkaProducerConfiguration(bootstrapServers: [broker.bootstrap])
        settings.deliveryTimeout = .seconds(5)
        let producer = try KafkaProducer(configuration: settings)
        // Two nodes: each its own Redis client and sink, one producer is enough for the test.
        let clients = [RedisClient(configuration: .init(configuration.redis)), RedisClient(configuration: .init(configuration.redis))]
        let sinks = try clients.map { client in
            IngressSink(producer: producer, configuration: configuration, hostname: "mx.test",
                        quotas: try #require(TenantQuotas(configuration: configuration, redis: client)))
        }
        let acme = ConnectionInfo(clientIP: "127.0.0.1", tenant: "acme")
        var replies: [SMTPReply] = []
        for index in 0..<5 { replies.append(await sinks[index % 2].accept(envelope, message: message, connection: acme)) }
        #expect(replies.prefix(3).allSatisfy { $0.code == 250 }, "\(replies)")
        for reply in replies.dropFirst(3) {
            #expect(reply.code == 451 && reply.enhancedCode == EnhancedStatusCode(4, 7, 1), "\(reply)")
            #expect(reply.description.contains("Message rate quota exceeded (3/h), try again in "))
        }
        let globex = ConnectionInfo(clientIP: "10.0.0.1", tenant: "globex")
        #expect(await sinks[0].accept(envelope, message: message, connection: globex).code == 250, "a tenant without a quota is not limited")

        // Redis gone: mail goes on, unchecked.
        redis.stop()
        #expect(await sinks[1].accept(envelope, message: message, connection: acme).code == 250)

        let records = try await readRecords(broker, topic: "smarthost.acme", count: 5, timeout: .seconds(10))
        #expect(records.count == 4, "three within the quota and one admitted while Redis was down; the refused two never reached Kafka")
        for client in clients { await client.close() }
        await producer.close()
    }
}
