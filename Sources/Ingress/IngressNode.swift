import Kafka
import Logging
import SMTPProtocol
import SMTPServer
import ServiceLifecycle
import SmarthostConfig
import Synchronization

extension KafkaProducerConfiguration {
    /// The producer settings a node derives from the configuration file.
    public init(_ settings: SmarthostConfiguration.KafkaSettings, clientID: String) {
        self.init(bootstrapServers: settings.brokers.map(\.description))
        self.clientID = clientID
        deliveryTimeout = settings.deliveryTimeout
        maxInFlight = settings.maxInFlight
        maxRecordSize = settings.maxRecordSize.bytes
        extraOptions = settings.clientOptions
    }
}

/// The listeners of an ingress node as a ServiceLifecycle service: they accept connections
/// until a graceful shutdown (SIGTERM), then stop accepting.
public final class IngressNode: Service, Sendable {
    public let listeners: [SMTPListener]
    private let logger: Logger
    private let draining = Atomic<Bool>(false)

    /// True once a graceful shutdown began: the node should no longer get new clients.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    private init(listeners: [SMTPListener], logger: Logger) {
        self.listeners = listeners
        self.logger = logger
    }

    /// Binds every configured listener; fails (closing what it opened) if one cannot be bound.
    public static func start(configuration: SmarthostConfiguration, sink: IngressSink,
                             logger: Logger = Logger(label: "smarthost.ingress")) async throws -> IngressNode {
        let hostname = configuration.ingress.hostname ?? configuration.node.id
        var listeners: [SMTPListener] = []
        do {
            for listener in configuration.ingress.listeners {
                let tenantLimits = configuration.tenants.values
                let policy = SessionPolicy(
                    hostname: hostname,
                    maximumMessageSize: tenantLimits.map(\.maxMessageSize.bytes).max() ?? SessionPolicy(hostname: hostname).maximumMessageSize,
                    maximumRecipients: tenantLimits.map(\.maxRecipients).max() ?? SessionPolicy(hostname: hostname).maximumRecipients)
                listeners.append(try await SMTPListener.bind(
                    host: listener.address.host, port: listener.address.port, policy: policy, sink: sink,
                    resolveTenant: configuration.trustedNetworkResolver, proxyProtocol: listener.proxyProtocol, logger: logger))
                logger.notice("listening", metadata: ["address": "\(listener.address)", "proxy_protocol": "\(listener.proxyProtocol)"])
            }
        } catch {
            for listener in listeners { try? await listener.close() }
            throw error
        }
        return IngressNode(listeners: listeners, logger: logger)
    }

    public func run() async throws {
        try? await gracefulShutdown()
        draining.store(true, ordering: .relaxed)
        logger.notice("stopping: no new connections")
        for listener in listeners { try? await listener.close() }
    }
}
