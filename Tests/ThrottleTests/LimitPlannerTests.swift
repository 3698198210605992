import SmarthostConfig
import Testing
@testable import Throttle

/// How the configured `limits` become the Redis keys a message or a connection takes from:
/// pure logic, no Redis.
@Suite struct LimitPlannerTests {
    typealias Limit = SmarthostConfiguration.Limit

    static let gmail = MessageTraffic(pool: "shared", site: "gmail-smtp-in.l.google.com,alt1.gmail-smtp-in.l.google.com",
                                      siteHosts: ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"],
                                      domain: "gmail.com", tenant: "acme")
    static let workspace = MessageTraffic(pool: "shared", site: gmail.site, siteHosts: gmail.siteHosts,
                                          domain: "customer.example", tenant: "globex")
    static let outlook = MessageTraffic(pool: "dedicated", site: "outlook-com.olc.protection.outlook.com",
                                        siteHosts: ["outlook-com.olc.protection.outlook.com"], domain: "outlook.com", tenant: "acme")

    static func connection(_ traffic: MessageTraffic, domains: Set<String>? = nil) -> ConnectionTraffic {
        ConnectionTraffic(pool: traffic.pool, site: traffic.site, siteHosts: traffic.siteHosts, domains: domains ?? [traffic.domain])
    }

    static func names(_ quotas: [QuotaKey]) -> [String] { quotas.map(\.name) }

    @Test func aConcreteSelectorOverridesTheWildcardOfTheSameShape() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(domain: "*"), maxConnections: 20, maxMessageRate: Rate(count: 600, per: .seconds(60))),
            Limit(scope: .init(domain: "gmail.com"), maxConnections: 50),
        ])
        // gmail.com: its own connection limit, the wildcard's rate (the override gives no rate).
        #expect(planner.plan(for: Self.connection(Self.gmail)).leases == [LeaseKey(name: "conn:domain=gmail.com", limit: 50)])
        #expect(Self.names(planner.quotas(for: Self.gmail)) == ["rate:domain=gmail.com"])
        // Any other domain: the wildcard, one limit per site (domains on the same MX hosts share it).
        #expect(planner.plan(for: Self.connection(Self.outlook)).leases
                == [LeaseKey(name: "conn:site=\(Self.outlook.site)", limit: 20)])
        #expect(planner.quotas(for: Self.outlook).map(\.quota) == [.rate(GCRARate(count: 600, per: .seconds(60), burst: 10))],
                "the default burst is one second's worth of the rate")
    }

    @Test func theFirstOfTwoEquallyConcreteEntriesWins() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(domain: "gmail.com"), maxMessageRate: Rate(count: 100, per: .seconds(60)), messageRateBurst: 5),
            Limit(scope: .init(domain: "gmail.com"), maxMessageRate: Rate(count: 900, per: .seconds(60))),
        ])
        #expect(planner.quotas(for: Self.gmail).map(\.quota) == [.rate(GCRARate(count: 100, per: .seconds(60), burst: 5))])
    }

    @Test func entriesOfDifferentShapesAllApply() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(pool: "shared"), maxMessageRate: Rate(count: 50, per: .seconds(1))),
            Limit(scope: .init(site: "google.com"), maxConnections: 40, maxMessagesPerHour: 20_000),
            Limit(scope: .init(tenant: "acme"), maxMessagesPerDay: 500_000),
            Limit(scope: .init(pool: "shared", domain: "gmail.com"), maxConnections: 10, maxMessagesPerConnection: 50),
        ])
        #expect(Self.names(planner.quotas(for: Self.gmail)) == [
            "day:tenant=acme", "hour:site=google.com", "rate:pool=shared",
        ])
        let hour = planner.quotas(for: Self.gmail).first { $0.name.hasPrefix("hour:") }?.quota
        #expect(hour == .perWindow(count: 20_000, window: .seconds(3_600)))
        let day = planner.quotas(for: Self.gmail).first { $0.name.hasPrefix("day:") }?.quota
        #expect(day == .perWindow(count: 500_000, window: .seconds(86_400)))
        let plan = planner.plan(for: Self.connection(Self.gmail))
        #expect(plan.leases.map(\.name) == ["conn:pool=shared domain=gmail.com", "conn:site=google.com"])
        #expect(plan.maxMessagesPerConnection == 50)
        // Another tenant's mail to a domain Google hosts: the site's limits, not acme's or gmail.com's.
        #expect(Self.names(planner.quotas(for: Self.workspace)) == ["hour:site=google.com", "rate:pool=shared"])
        #expect(planner.plan(for: Self.connection(Self.workspace)).leases.map(\.name) == ["conn:site=google.com"])
    }

    @Test func aSiteSelectorMatchesHostNamesThatAreOrEndInIt() {
        let planner = LimitPlanner(limits: [Limit(scope: .init(site: "google.com"), maxConnections: 5)])
        #expect(planner.plan(for: Self.connection(Self.gmail)).leases.count == 1)
        #expect(planner.plan(for: Self.connection(Self.outlook)).leases.isEmpty)
        let lookalike = MessageTraffic(pool: "shared", site: "mx.notgoogle.com", siteHosts: ["mx.notgoogle.com"], domain: "x.test", tenant: "acme")
        #expect(planner.plan(for: Self.connection(lookalike)).leases.isEmpty, "a suffix match is by whole labels")
        let exact = MessageTraffic(pool: "shared", site: "google.com", siteHosts: ["google.com"], domain: "google.com", tenant: "acme")
        #expect(planner.plan(for: Self.connection(exact)).leases.count == 1)
    }

    @Test func wildcardsMakeOneLimitPerValue() {
        let planner = LimitPlanner(limits: [Limit(scope: .init(pool: "*", tenant: "*"), maxMessageRate: Rate(count: 10, per: .seconds(1)))])
        #expect(Self.names(planner.quotas(for: Self.gmail)) == ["rate:pool=shared tenant=acme"])
        #expect(Self.names(planner.quotas(for: Self.outlook)) == ["rate:pool=dedicated tenant=acme"])
        #expect(Self.names(planner.quotas(for: Self.workspace)) == ["rate:pool=shared tenant=globex"])
    }

    @Test func tenantLimitsNeverBoundConnections() {
        // A connection carries several tenants' mail; the loader refuses max_connections with a
        // tenant, and the planner ignores such an entry for connections if one gets through.
        let planner = LimitPlanner(limits: [Limit(scope: .init(tenant: "acme"), maxConnections: 1, maxMessagesPerConnection: 1)])
        #expect(planner.plan(for: Self.connection(Self.gmail)) == ConnectionPlan())
    }

    @Test func aConnectionToASiteTakesTheLimitsOfEveryDomainRoutedThere() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(domain: "gmail.com"), maxConnections: 8, maxMessagesPerConnection: 100),
            Limit(scope: .init(domain: "customer.example"), maxConnections: 3, maxMessagesPerConnection: 20),
        ])
        let plan = planner.plan(for: Self.connection(Self.gmail, domains: ["gmail.com", "customer.example"]))
        #expect(plan.leases.map(\.limit) == [3, 8])
        #expect(plan.maxMessagesPerConnection == 20, "the lowest of those that apply")
        #expect(planner.plan(for: Self.connection(Self.gmail, domains: ["other.example"])) == ConnectionPlan())
    }

    @Test func aDomainsOwnLimitOverridesTheWildcardForTheSiteItIsRoutedTo() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(domain: "*"), maxConnections: 20),
            Limit(scope: .init(domain: "gmail.com"), maxConnections: 50),
        ])
        // Google's MX hosts also carry a Workspace customer's domain: gmail.com's limit is the site's.
        #expect(planner.plan(for: Self.connection(Self.gmail, domains: ["gmail.com", "customer.example"])).leases
                == [LeaseKey(name: "conn:domain=gmail.com", limit: 50)])
        #expect(planner.plan(for: Self.connection(Self.gmail, domains: ["customer.example"])).leases
                == [LeaseKey(name: "conn:site=\(Self.gmail.site)", limit: 20)])
    }

    @Test func aDomainWildcardAndASiteWildcardNameOneSetAndTheLowerLimitHolds() {
        let planner = LimitPlanner(limits: [
            Limit(scope: .init(site: "*"), maxConnections: 30),
            Limit(scope: .init(domain: "*"), maxConnections: 12),
        ])
        #expect(planner.plan(for: Self.connection(Self.outlook)).leases == [LeaseKey(name: "conn:site=\(Self.outlook.site)", limit: 12)])
    }

    @Test func trafficNoLimitSelectsTakesNothing() {
        let planner = LimitPlanner(limits: [Limit(scope: .init(pool: "dedicated"), maxConnections: 2, maxMessageRate: Rate(count: 1, per: .seconds(1)))])
        #expect(planner.quotas(for: Self.gmail).isEmpty)
        #expect(planner.plan(for: Self.connection(Self.gmail)) == ConnectionPlan())
        #expect(LimitPlanner(limits: []).isEmpty)
    }

    @Test(arguments: [(Rate(count: 600, per: .seconds(60)), 10), (Rate(count: 1, per: .seconds(3_600)), 1),
                      (Rate(count: 25, per: .seconds(10)), 3), (Rate(count: 5_000, per: .seconds(1)), 5_000)])
    func theDefaultBurstIsOneSecondOfTheRate(rate: Rate, burst: Int) {
        #expect(LimitPlanner.defaultBurst(rate) == burst)
    }
}
