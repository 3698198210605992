import Kafka
import Logging
import NIOSSL
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
    private let sink: IngressSink
    private let shutdownGrace: Duration
    private let logger: Logger
    private let draining = Atomic<Bool>(false)

    /// True once a graceful shutdown began: the node should no longer get new clients.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    private init(listeners: [SMTPListener], sink: IngressSink, shutdownGrace: Duration, logger: Logger) {
        self.listeners = listeners
        self.sink = sink
        self.shutdownGrace = shutdownGrace
        self.logger = logger
    }

    /// Binds every configured listener; fails (closing what it opened) if one cannot be bound.
    /// `faults` (tests only) sees each reply to a message once it is written.
    public static func start(configuration: SmarthostConfiguration, sink: IngressSink, faults: IngressFaults? = nil,
                             logger: Logger = Logger(label: "smarthost.ingress")) async throws -> IngressNode {
        let hostname = configuration.ingress.hostname ?? configuration.node.id
        // Every listener shares one policy: the largest limits of any tenant (the sink then
        // holds each message to its own tenant's size limit).
        let defaults = SessionPolicy(hostname: hostname)
        let tenants = configuration.tenants.values
        let policy = SessionPolicy(
            hostname: hostname,
            maximumMessageSize: tenants.map(\.maxMessageSize.bytes).max() ?? defaults.maximumMessageSize,
            maximumRecipients: tenants.map(\.maxRecipients).max() ?? defaults.maximumRecipients)
        let resolveTenant = configuration.trustedNetworkResolver
        let authenticator = TenantAuthenticator(configuration: configuration)
        var listeners: [SMTPListener] = []
        do {
            for (index, listener) in configuration.ingress.listeners.enumerated() {
                let tls = try tlsContext(listener, key: "ingress.listeners[\(index)]")
                var listenerPolicy = policy
                listenerPolicy.authOverPlaintext = listener.authOverPlaintext
                // require_auth: no client is any tenant's by its address here, only by its login.
                let noTenantByAddress: TenantResolver = { _ in nil }
                let byAddress = listener.requireAuth ? noTenantByAddress : resolveTenant
                listeners.append(try await SMTPListener.bind(
                    host: listener.address.host, port: listener.address.port, policy: listenerPolicy, sink: sink,
                    resolveTenant: byAddress, authenticator: authenticator, proxyProtocol: listener.proxyProtocol,
                    tls: tls, implicitTLS: listener.implicitTLS,
                    timeouts: SessionTimeouts(command: configuration.ingress.commandTimeout, data: configuration.ingress.dataTimeout),
                    messageReplyWritten: faults?.replyWritten, logger: logger))
                let auth = authenticator == nil ? "none" : listener.authOverPlaintext ? "always" : tls == nil ? "never (no TLS)" : "after TLS"
                logger.notice("listening", metadata: [
                    "address": "\(listener.address)", "proxy_protocol": "\(listener.proxyProtocol)",
                    "tls": "\(tls == nil ? "none" : listener.implicitTLS ? "implicit" : "starttls")", "auth": "\(auth)",
                    "relay": "\(listener.requireAuth ? "login only" : "trusted networks or login")",
                ])
            }
        } catch {
            for listener in listeners { try? await listener.close() }
            throw error
        }
        return IngressNode(listeners: listeners, sink: sink, shutdownGrace: configuration.ingress.shutdownGrace, logger: logger)
    }

    /// The listener's TLS context, or nil when it has no certificate; a file that cannot be
    /// loaded is named with its configuration key.
    private static func tlsContext(_ listener: SmarthostConfiguration.Listener, key: String) throws -> NIOSSLContext? {
        guard let certificateFile = listener.certificateFile, let privateKeyFile = listener.privateKeyFile else { return nil }
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile) } catch {
            throw IngressStartError("\(key).certificate_file: cannot load \(certificateFile): \(error)")
        }
        let privateKey: NIOSSLPrivateKey
        do { privateKey = try NIOSSLPrivateKey(file: privateKeyFile, format: .pem) } catch {
            throw IngressStartError("\(key).private_key_file: cannot load \(privateKeyFile): \(error)")
        }
        do {
            return try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey)))
        } catch {
            throw IngressStartError("\(key): the certificate and key do not make a TLS context: \(error)")
        }
    }

    /// On graceful shutdown: stop accepting, then let the sessions in progress finish for at
    /// most `ingress.shutdown_grace`; the producer, shut down after this service, then flushes.
    /// Sessions still open after the grace are cut: their unfinished messages were never
    /// acknowledged, so their clients retry.
    public func run() async throws {
        try? await gracefulShutdown()
        draining.store(true, ordering: .relaxed)
        logger.notice("stopping: no new connections")
        for listener in listeners { try? await listener.close() }
        let deadline = ContinuousClock.now + shutdownGrace
        while ContinuousClock.now < deadline {
            let sessions = listeners.reduce(0) { $0 + $1.openConnections }
            if sessions == 0 { break }
            try? await Task.sleep(for: .milliseconds(100), tolerance: .milliseconds(50))
        }
        let left = listeners.reduce(0) { $0 + $1.openConnections }
        logger.notice("stopped accepting mail", metadata: ["sessions_cut": "\(left)"])
    }
}

/// Why an ingress node could not start, naming the configuration key at fault.
public struct IngressStartError: Error, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
