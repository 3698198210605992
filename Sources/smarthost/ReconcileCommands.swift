import ArgumentParser
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
                                adminToken: configuration.node.adminToken, announcement: announcement),
                consumer: consumer, registry: NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix))
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
            services: [.init(service: redis), .init(service: consumer), .init(service: service)],
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

/// `--format` of the report commands.
struct ReportFormatOption: ParsableArguments {
    @Option(help: "table (for people), json (for machines) or csv (for spreadsheets).")
    var format: String = "table"

    func validate() throws {
        guard ReportFormat(rawValue: format) != nil else { throw ValidationError("--format must be table, json or csv, got \(format)") }
    }

    var value: ReportFormat { ReportFormat(rawValue: format)! }
}

struct Reconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The orphan sweeps of every delivery node, merged: the last report, or a sweep now.",
        subcommands: [Report.self, Sweep.self])

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the last sweep report of every live delivery node.")
        @OptionGroup var file: ConfigFileOption
        @OptionGroup var output: ReportFormatOption

        func run() async throws {
            try await Reconcile.collect(file, output.value, method: "GET", path: "/admin/reconcile/report")
        }
    }

    struct Sweep: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sweep every live delivery node now and print the merged report.")
        @OptionGroup var file: ConfigFileOption
        @OptionGroup var output: ReportFormatOption

        func run() async throws {
            try await Reconcile.collect(file, output.value, method: "POST", path: "/admin/reconcile/sweep")
        }
    }

    /// Asks every live delivery node; one that does not answer is named in the report (and
    /// makes the command exit 1), never skipped silently.
    static func collect(_ file: ConfigFileOption, _ format: ReportFormat, method: String, path: String) async throws {
        let configuration = try file.load()
        let nodes = try await withRedis(configuration) { redis throws(RedisError) in
            try await NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix).liveNodes()
        }.map(\.announcement).filter { $0.role == "delivery" }
        var sweeps: [SweepReport] = []
        var unanswered: [String: String] = [:]
        for node in nodes {
            do {
                let (status, body) = try await AdminClient.request(node.admin, method: method, path: path, token: configuration.node.adminToken,
                                                                   timeout: .seconds(600))
                guard status == 200 else { throw AdminClient.Failure(description: "answered \(status): \(String(decoding: body.prefix(300), as: UTF8.self))") }
                sweeps += try ReportFormat.decode(ReconcileReport.self, from: body).sweeps
            } catch {
                unanswered[node.id] = "\(error)"
            }
        }
        let report = ReconcileReport(generatedAt: Int64(MessageID.currentMilliseconds()), sweeps: sweeps, unanswered: unanswered)
        print(report.rendered(as: format), terminator: "")
        if nodes.isEmpty { printError("no live delivery node in the registry") }
        if !unanswered.isEmpty || nodes.isEmpty { throw ExitCode.failure }
    }
}

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Print the cluster ledger from the reconciler: accepted, delivered, bounced, expired, deleted, queued, unaccounted.")

    @OptionGroup var file: ConfigFileOption
    @OptionGroup var output: ReportFormatOption
    @Flag(help: "Have the reconciler check the spools now instead of printing its last check.") var now = false

    func run() async throws {
        let configuration = try file.load()
        let reconcilers = try await withRedis(configuration) { redis throws(RedisError) in
            try await NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix).liveNodes()
        }.map(\.announcement).filter { $0.role == "reconciler" }
        guard let reconciler = reconcilers.first else {
            printError("no live reconciler in the registry (smarthost reconciler runs one)")
            throw ExitCode.failure
        }
        let path = (now ? "/admin/ledger/check" : "/admin/ledger") + "?format=\(output.value.rawValue)"
        let (status, body) = try await AdminClient.request(reconciler.admin, method: now ? "POST" : "GET", path: path,
                                                           token: configuration.node.adminToken, timeout: .seconds(600))
        guard status == 200 else {
            printError("\(reconciler.id) (\(reconciler.admin)) answered \(status): \(String(decoding: body, as: UTF8.self))")
            throw ExitCode.failure
        }
        print(String(decoding: body, as: UTF8.self), terminator: "")
    }
}
