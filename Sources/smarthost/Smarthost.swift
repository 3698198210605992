import ArgumentParser
import CommandSupport
import Credentials
import Delivery
import DNS
import Foundation
import Ingress
import Kafka
import Logging
import NodeHTTP
import Observability
import Prometheus
import QueueRecord
import Redis
import ServiceLifecycle
import SmarthostConfig
import Spool
import Throttle

@main
struct Smarthost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smarthost",
        abstract: "A node of the smarthost cluster, and the tools to prepare one (smarthostctl operates a running cluster).",
        subcommands: [IngressCommand.self, DeliveryCommand.self, ReconcilerCommand.self, CheckConfig.self, Topics.self,
                      HashPassword.self, Version.self])

    static let version = "0.6.0-dev"
}

/// Checks the linked librdkafka, then sets up logs and metrics as the configuration says.
func startObservability(_ configuration: SmarthostConfiguration) throws -> PrometheusCollectorRegistry {
    try LibraryVersion.check()
    return Observability.bootstrap(level: Logger.Level(rawValue: configuration.node.logLevel.rawValue) ?? .info,
                                   format: LogFormat(rawValue: configuration.node.logFormat.rawValue) ?? .json,
                                   nodeID: configuration.node.id)
}

struct IngressCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingress",
        abstract: "Run an ingress node: accept SMTP and enqueue each message to its tenant's Kafka topic.")

    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let configuration = try file.load()
        guard !configuration.ingress.listeners.isEmpty else {
            printError("\(file.config): ingress.listeners: an ingress node needs at least one listener")
            throw ExitCode(2)
        }
        let registry = try startObservability(configuration)
        let logger = Logger(label: "smarthost.ingress")
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(configuration.kafka, clientID: configuration.node.id))
        let hostname = configuration.ingress.hostname ?? configuration.node.id
        let redis = RedisClient(configuration: RedisClient.Configuration(configuration.redis))
        let quotas = TenantQuotas(configuration: configuration, redis: redis)
        let sink = IngressSink(producer: producer, configuration: configuration, hostname: hostname, quotas: quotas)
        let kafka = try KafkaReachability(bootstrapServers: configuration.kafka.brokers.map(\.description))
        await kafka.check()
        let faults = configuration.testing.faultInjection ? IngressFaults(logger: logger) : nil
        if faults != nil { logger.warning("testing.fault_injection is on: the admin API can break this node on purpose") }
        let node: IngressNode
        do {
            node = try await IngressNode.start(configuration: configuration, sink: sink, faults: faults)
        } catch let error as IngressStartError {
            printError("\(file.config): \(error)")
            throw ExitCode(2)
        }
        let http = try await NodeHTTPServer.bind(
            host: configuration.node.adminListen.host, port: configuration.node.adminListen.port,
            endpoints: NodeEndpoints(
                notReadyReason: { node.isDraining ? "shutting down" : kafka.unreachableReason },
                metrics: { Observability.prometheusText(registry) }, adminToken: configuration.node.adminToken,
                admin: { [admin = IngressAdmin(node: node, nodeID: configuration.node.id, faults: faults,
                                               kafkaProblem: { kafka.unreachableReason })] in
                    await admin.handle($0)
                }))
        logger.notice("health, readiness and metrics", metadata: ["address": "\(configuration.node.adminListen)"])
        // Shut down in reverse order: the listeners stop accepting, then the producer flushes.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: producer), .init(service: redis), .init(service: kafka), .init(service: node),
                       .init(service: RegistryPresence(
                           registry: NodeRegistry(redis: redis, keyPrefix: configuration.redis.keyPrefix),
                           announcement: NodeAnnouncement(id: configuration.node.id, role: "ingress", admin: configuration.node.adminListen.description,
                                                          startedAt: Int64(MessageID.currentMilliseconds()), version: Smarthost.version)))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try? await http.close()
    }
}

struct DeliveryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delivery",
        abstract: "Run a delivery node: consume the tenant topics into the spool and deliver by SMTP.")

    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let configuration = try file.load()
        let registry = try startObservability(configuration)
        let logger = Logger(label: "smarthost.delivery")
        let spool: Spool
        do {
            spool = try Spool.open(directory: configuration.node.spoolDirectory)
        } catch {
            printError("\(file.config): node.spool_dir: \(error)")
            throw ExitCode(2)
        }
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(configuration.kafka, clientID: configuration.node.id))
        let events = try EventPublisher(producer: producer, topic: configuration.kafka.eventsTopic,
                                        directory: configuration.node.spoolDirectory,
                                        maximumSize: configuration.delivery.eventLogMaxSize.bytes, keep: configuration.delivery.eventLogKeep)
        let consumer = try KafkaConsumer(configuration: KafkaConsumerConfiguration(
            configuration, groupID: configuration.kafka.consumerGroup, topics: [configuration.kafka.tenantTopicPattern]))
        // Without a default next hop, domains no route names are delivered to their MX hosts.
        var dnsResolver: DNSResolver?
        var mailRouter: MailRouteResolver?
        if configuration.delivery.defaultNextHop == nil {
            let dns = configuration.dns
            do {
                dnsResolver = try DNSResolver(forwarders: dns.resolvers.map(\.description), timeout: dns.timeout)
            } catch {
                printError("\(file.config): dns.resolvers: \(error)")
                throw ExitCode(2)
            }
            mailRouter = MailRouteResolver(resolver: dnsResolver!, settings: .init(minimumTTL: dns.minimumTTL, maximumTTL: dns.maximumTTL,
                                                                                  failureTTL: dns.failureTTL),
                                           clock: { MessageID.currentMilliseconds() })
        }
        let redis = RedisClient(configuration: RedisClient.Configuration(configuration.redis))
        let throttle = ClusterThrottle(
            redis: redis, keyPrefix: configuration.redis.keyPrefix,
            announcement: NodeAnnouncement(id: configuration.node.id, role: "delivery", admin: configuration.node.adminListen.description,
                                           startedAt: Int64(MessageID.currentMilliseconds()), version: Smarthost.version),
            limits: configuration.limits)
        let faults = configuration.testing.faultInjection ? FaultInjector() : nil
        if faults != nil { logger.warning("testing.fault_injection is on: the admin API can break this node on purpose") }
        let manager = QueueManager(settings: QueueManager.Settings(configuration: configuration), spool: spool, events: events,
                                   staticRoutes: StaticRoutes(configuration: configuration), mailRouter: mailRouter, throttle: throttle,
                                   faults: faults)
        let reconciliation = configuration.reconciliation
        let node = DeliveryNode(consumer: consumer, spool: spool, manager: manager, events: events,
                                maxQueued: configuration.delivery.maxQueued,
                                sweep: .init(every: reconciliation.sweepEvery, grace: reconciliation.orphanGrace,
                                             reportDirectory: reconciliation.reportDirectory ?? configuration.node.spoolDirectory + "/reports"),
                                faults: faults)
        let admin = DeliveryAdmin(node: node, faults: faults)
        let kafka = try KafkaReachability(bootstrapServers: configuration.kafka.brokers.map(\.description))
        let http = try await NodeHTTPServer.bind(
            host: configuration.node.adminListen.host, port: configuration.node.adminListen.port,
            endpoints: NodeEndpoints(notReadyReason: { kafka.unreachableReason },
                                     metrics: { Observability.prometheusText(registry) },
                                     adminToken: configuration.node.adminToken, admin: { await admin.handle($0) }))
        logger.notice("delivery node starting", metadata: [
            "spool": "\(configuration.node.spoolDirectory)", "topics": "\(configuration.kafka.tenantTopicPattern)",
            "admin": "\(configuration.node.adminListen)",
        ])
        // Shut down in reverse order: the node stops consuming and delivering, then the
        // consumer commits and leaves the group, then the producer flushes the last events.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: producer), .init(service: redis), .init(service: throttle), .init(service: consumer),
                       .init(service: kafka), .init(service: node),
                       .init(service: ConfigurationReloader(path: file.config, manager: manager))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        dnsResolver?.shutdown()
        spool.close()
        try? await http.close()
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config", abstract: "Validate a configuration file and summarise it.")

    @OptionGroup var file: ConfigFileOption

    func run() throws {
        let configuration = try file.load()
        print("\(file.config): ok")
        print("  node \(configuration.node.id), Kafka \(configuration.kafka.brokers.map(\.description).joined(separator: ",")), Redis \(configuration.redis.address)")
        print("  \(configuration.tenants.count) tenants: " + configuration.tenants.keys.sorted().map { configuration.kafka.tenantTopic(for: $0) }.joined(separator: " "))
        print("  \(configuration.pools.count) pools, \(configuration.trafficClasses.count) traffic classes, \(configuration.routes.count) routes, \(configuration.limits.count) limits")
    }
}

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the events topic and every tenant's topic that does not exist yet, then list the topics.")

    @OptionGroup var file: ConfigFileOption

    @Option(help: "Partitions of each topic created (delivery nodes share a tenant's partitions).")
    var partitions = 6

    @Option(help: "Replication factor of each topic created.")
    var replicationFactor = 1

    func validate() throws {
        guard (1...10_000).contains(partitions) else { throw ValidationError("--partitions must be between 1 and 10000") }
        guard (1...16).contains(replicationFactor) else { throw ValidationError("--replication-factor must be between 1 and 16") }
    }

    func run() async throws {
        let configuration = try file.load()
        let admin = try KafkaAdmin(bootstrapServers: configuration.kafka.brokers.map(\.description))
        let wanted = [configuration.kafka.eventsTopic] + configuration.tenants.keys.sorted().map { configuration.kafka.tenantTopic(for: $0) }
        for topic in wanted {
            try await admin.createTopic(topic, partitions: partitions, replicationFactor: replicationFactor)
        }
        for topic in try await admin.topics() where wanted.contains(topic.name) {
            print("\(topic.name)\t\(topic.partitions) partitions")
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the versions of the C libraries this binary loaded; fail if librdkafka is too old.")

    func run() throws {
        print("librdkafka \(LibraryVersion.linkedString) (at least \(LibraryVersion.minimumString) required)")
        do {
            try LibraryVersion.check()
        } catch {
            printError(error.description)
            throw ExitCode.failure
        }
    }
}

extension KafkaConsumerConfiguration {
    /// A consumer of this node: the configuration's brokers, timeouts, record size and client options.
    init(_ configuration: SmarthostConfiguration, groupID: String, topics: [String]) {
        self.init(bootstrapServers: configuration.kafka.brokers.map(\.description), groupID: groupID, topics: topics)
        clientID = configuration.node.id
        sessionTimeout = configuration.kafka.sessionTimeout
        metadataRefresh = configuration.kafka.metadataRefresh
        maxRecordSize = configuration.kafka.maxRecordSize.bytes
        extraOptions = configuration.kafka.clientOptions
    }
}

/// Prints the scrypt hash of a password read from standard input, for a tenant's
/// `credentials[].password_hash`. The password is never an argument: arguments end up in
/// shell histories and process listings.
struct HashPassword: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Read a password from standard input (one line) and print its scrypt hash for the configuration.")

    @Option(name: .long, help: "log2 of scrypt's cost N (10 to 20).")
    var cost: Int = PasswordHash.defaultLogRounds

    func validate() throws {
        guard (10...20).contains(cost) else { throw ValidationError("--cost must be 10 to 20, got \(cost)") }
    }

    func run() throws {
        guard var password = readLine(strippingNewline: true) else {
            printError("hash-password: expected a password on standard input, got nothing")
            throw ExitCode(2)
        }
        if password.hasSuffix("\r") { password.removeLast() }
        guard !password.isEmpty else {
            printError("hash-password: expected a non-empty password on standard input")
            throw ExitCode(2)
        }
        print(try PasswordHash.make(password: password, logRounds: cost))
    }
}
