import Logging
import Metrics
import Redis
import SmarthostConfig
import Throttle

/// The tenants' `message_rate` quotas, shared by every ingress node through Redis (GCRA), so
/// that a tenant's clients spread over the load balancer get the quota once, not once per node.
///
/// When Redis cannot answer, the message is admitted unchecked (logged and counted): a quota
/// protects the cluster's reputation over minutes, while refusing all mail because Redis
/// blinked would break the relay for every tenant at once.
public struct TenantQuotas: Sendable {
    public enum Outcome: Sendable, Equatable {
        case admitted
        /// Over the tenant's configured `rate`.
        case exceeded(Rate, retryAfter: Duration)
        case unchecked
    }

    private let limiter: SharedRateLimiter
    private let rates: [String: Rate]
    private let logger: Logger

    /// nil when no tenant has a quota: Redis is then not needed for ingress.
    public init?(configuration: SmarthostConfiguration, redis: RedisClient, logger: Logger = Logger(label: "smarthost.ingress.quota")) {
        let rates = configuration.tenants.compactMapValues(\.messageRate)
        guard !rates.isEmpty else { return nil }
        self.rates = rates
        self.limiter = SharedRateLimiter(redis: redis, keyPrefix: configuration.redis.keyPrefix)
        self.logger = logger
    }

    /// Whether `admit` asks Redis for this tenant.
    public func hasQuota(_ tenant: String) -> Bool { rates[tenant] != nil }

    /// Takes one message from `tenant`'s quota.
    public func admit(_ tenant: String) async -> Outcome {
        guard let rate = rates[tenant] else { return .admitted }
        let outcome: Outcome
        do {
            switch try await limiter.take("quota:\(tenant)", rate: GCRARate(count: rate.count, per: rate.per)) {
            case .allowed: outcome = .admitted
            case .limited(let retryAfter): outcome = .exceeded(rate, retryAfter: retryAfter)
            }
        } catch {
            logger.warning("tenant quota not checked: Redis did not answer", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
            outcome = .unchecked
        }
        let result = switch outcome {
        case .admitted: "admitted"
        case .exceeded: "exceeded"
        case .unchecked: "unchecked"
        }
        Counter(label: "smarthost_ingress_quota_decisions_total", dimensions: [("result", result)]).increment()
        return outcome
    }
}
