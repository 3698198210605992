import ArgumentParser
import CommandSupport
import Foundation
import Kafka
import Logging
import NodeHTTP
import Observability
import QueueRecord
import Reconciler
import Reconciliation
import Redis
import ServiceLifecycle
import SmarthostConfig
import Throttle

struct ReconcilerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconciler",
        abstract: "Run the reconciler: keep the cluster ledger from the events topic and check it against the delivery nodes' spools.")

    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let configuration = try file.load()
        let registry = try startObservability(configuration)
        let logger = Logger(label: "smarthost.reconciler")
        var consumerConfiguration = KafkaConsumerConfiguration(
            configuration, groupID: configuration.kafka.consumerGroup + "-ledger", topics: [configuration.kafka.eventsTopic])
        consumerConfiguration.bufferCapacity = 10_000
        let consumer = try KafkaConsumer(configuration: consumerConfiguration)
        let redis = RedisClient(configuration: RedisClient.Configuration(configuration.redis))
        let reconciliation = configuration.reconciliation
        let announcement = NodeAnnouncement(id: configuration.node.id, role: "reconciler", admin: configuration.node.adminListen.description,
                                            startedAt: Int64(MessageID.currentMilliseconds()), version: Smarthost.version)
        let service: LedgerService
        do {
            service = try LedgerService(
                settings: .init(nodeID: configuration.node.id, ledgerDirectory: reconciliation.ledgerDirectory,
                                reportDirectory: reconciliation.reportDirectory ?? reconciliation.ledgerDirectory,
                                unaccountedAfter: reconciliation.unaccountedAfter, checkEvery: reconciliation.ledgerEvery,
                                adminToken: configuration.node.adminToken, deliveryGroup: configuration.kafka.consumerGroup,
                                tenantTopicPrefix: configuration.kafka.topicPrefix + "."),
                consumer: consumer, admin: try KafkaAdmin(bootstrapServers: configuration.kafka.brokers.map(\.description)),
                registry: NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix))
        } catch {
            printError("\(file.config): reconciliation.ledger_dir: \(error)")
            throw ExitCode(2)
        }
        let http = try await NodeHTTPServer.bind(
            host: configuration.node.adminListen.host, port: configuration.node.adminListen.port,
            endpoints: NodeEndpoints(notReadyReason: { nil }, metrics: { Observability.prometheusText(registry) },
                                     adminToken: configuration.node.adminToken, admin: { await Self.route($0, service) }))
        logger.notice("reconciler starting", metadata: ["ledger": "\(reconciliation.ledgerDirectory)", "admin": "\(configuration.node.adminListen)"])
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: redis), .init(service: consumer),
                       .init(service: RegistryPresence(registry: NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix),
                                                       announcement: announcement)),
                       .init(service: service)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try? await http.close()
    }

    /// GET /admin/ledger (the last check), POST /admin/ledger/check (check now).
    static func route(_ request: AdminRequest, _ service: LedgerService) async -> AdminResponse? {
        let check: Bool
        switch (request.method, request.path) {
        case ("GET", "/admin/ledger"): check = false
        case ("POST", "/admin/ledger/check"): check = true
        default: return nil
        }
        guard let format = ReportFormat(query: request.query) else { return .error(400, ReportFormat.refusal(request.query)) }
        let report = check ? await service.check() : await service.lastReport()
        guard let report else { return .error(503, "no ledger check yet; POST /admin/ledger/check runs one now") }
        return AdminResponse(status: 200, contentType: format.contentType, body: report.rendered(as: format))
    }
}

