import Credentials
import Logging
import NIOPosix
import SMTPServer
import SmarthostConfig

/// Checks SMTP AUTH logins against the tenants' `credentials` (scrypt hashes), and refuses a
/// client address unchecked for a while after too many failures. Hashing runs on NIO's
/// blocking-work thread pool: it is slow on purpose and must hold up neither the event loops
/// nor Swift's cooperative threads.
public actor TenantAuthenticator: Authenticator {
    private let logins: [String: (tenant: TenantGrant, hash: PasswordHash)]
    private var failures: LoginFailureLimiter
    private let threadPool: NIOThreadPool
    private let logger: Logger
    /// Checked for unknown usernames, so that they take as long as known ones and a client
    /// cannot tell which usernames exist.
    private let decoy: PasswordHash?

    /// nil when no tenant has credentials: AUTH is then not offered.
    public init?(configuration: SmarthostConfiguration, threadPool: NIOThreadPool = .singleton,
                 logger: Logger = Logger(label: "smarthost.ingress.auth")) {
        var logins: [String: (tenant: TenantGrant, hash: PasswordHash)] = [:]
        for tenant in configuration.tenants.values {
            for credential in tenant.credentials { logins[credential.username] = (tenant.grant, credential.passwordHash) }
        }
        guard let strongest = logins.values.map(\.hash).max(by: { $0.logRounds < $1.logRounds }) else { return nil }
        self.logins = logins
        self.decoy = try? PasswordHash.make(password: "", logRounds: strongest.logRounds)
        self.failures = LoginFailureLimiter(limit: configuration.ingress.authFailureLimit,
                                            window: configuration.ingress.authFailureWindow)
        self.threadPool = threadPool
        self.logger = logger
    }

    public func authenticate(username: String, password: String, clientIP: String?) async -> AuthenticationResult {
        let client = clientIP ?? "unknown"
        guard !failures.isBlocked(client, now: .now) else { return .throttled }
        let login = logins[username]
        guard let hash = login?.hash ?? decoy else { return .unavailable }
        let matches: Bool
        do {
            matches = try await threadPool.runIfActive { hash.matches(password) }
        } catch {
            logger.warning("could not check a password", metadata: ["error": "\(error)"])
            return .unavailable
        }
        if let login, matches { return .accepted(login.tenant) }
        return failures.recordFailure(client, now: .now) ? .throttled : .rejected
    }
}
