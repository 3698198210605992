@testable import Delivery
import DNS
import SMTPProtocol
import SmarthostConfig
import Testing

@Suite struct ResponseClassifierTests {
    let defaults = try! ResponseClassifier(rules: SmarthostConfiguration.ResponseRule.builtIn)

    func reply(_ code: Int, _ enhanced: EnhancedStatusCode?, _ text: String) -> SMTPReply {
        SMTPReply(code, enhanced, text)
    }

    /// The receivers' own words, as their documentation and bounce collections give them.
    @Test(arguments: [
        (421, EnhancedStatusCode(4, 7, 28), "[192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", "suspend", "rate-limited-4.7.28"),
        (451, EnhancedStatusCode(4, 7, 650), "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", "suspend", "reputation-4.7.65x"),
        (421, EnhancedStatusCode(4, 7, 0), "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1", "suspend", "reputation-text"),
        (450, EnhancedStatusCode(4, 7, 1), "Client host rejected: too many connections from your host", "suspend", "rate-limited-text"),
        (451, EnhancedStatusCode(4, 7, 1), "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus", "suspend", "reputation-text"),
        (550, EnhancedStatusCode(5, 1, 1), "The email account that you tried to reach does not exist.", "bounce", "unknown-user"),
        (450, EnhancedStatusCode(4, 1, 1), "<nobody@example.com>: Recipient address rejected: User unknown", "bounce", "unknown-user"),
        (451, EnhancedStatusCode(4, 7, 1), "Greylisted, please try again in 300 seconds", "retry_later", "greylisted"),
        (452, EnhancedStatusCode(4, 2, 2), "The email account that you tried to reach is over quota.", "retry_later", "mailbox-full"),
    ] as [(Int, EnhancedStatusCode, String, String, String)])
    func realWorldRepliesMatchTheirDefaultRule(code: Int, enhanced: EnhancedStatusCode, text: String, action: String, rule: String) {
        let verdict = defaults.classify(reply(code, enhanced, text))
        #expect(verdict.action.rawValue == action)
        #expect(verdict.rule == rule)
        if verdict.action == .suspend || verdict.action == .retryLater { #expect(verdict.delay != nil) }
    }

    @Test func repliesNoRuleMatchesFollowTheirCode() {
        // A plain "try again later" is an ordinary deferral, not a reason to stop sending.
        #expect(defaults.classify(reply(451, EnhancedStatusCode(4, 3, 0), "try again later")).action == .retry)
        #expect(defaults.classify(reply(451, EnhancedStatusCode(4, 3, 0), "Local error in processing")) ==
                ResponseClassifier.Verdict(action: .retry, delay: nil, rule: nil))
        #expect(defaults.classify(reply(554, EnhancedStatusCode(5, 7, 1), "Message rejected")) ==
                ResponseClassifier.Verdict(action: .bounce, delay: nil, rule: nil))
        #expect(defaults.classify(reply(550, nil, "no enhanced code")).action == .bounce)
    }

    @Test func configuredRulesComeFirstAndEveryConditionMustMatch() throws {
        let rules = [
            SmarthostConfiguration.ResponseRule(name: "yahoo-deferral", code: .init("4xx"), text: "(?i)TS0[1-3]",
                                                action: .retryLater, delay: .seconds(7_200)),
            SmarthostConfiguration.ResponseRule(name: "policy-block-is-temporary", code: .init("554"),
                                                enhanced: .init("5.7.*"), action: .retry),
        ] + SmarthostConfiguration.ResponseRule.builtIn
        let classifier = try ResponseClassifier(rules: rules)
        #expect(classifier.classify(reply(421, EnhancedStatusCode(4, 7, 0), "[TS01] Messages from 192.0.2.1 temporarily deferred")).rule == "yahoo-deferral")
        #expect(classifier.classify(reply(554, EnhancedStatusCode(5, 7, 1), "blocked")).action == .retry)
        // 550 is not 554: the code condition fails, so the code decides.
        #expect(classifier.classify(reply(550, EnhancedStatusCode(5, 7, 1), "blocked")).action == .bounce)
    }

    @Test func everyBuiltInRuleHasTheConditionsItWasWrittenWith() {
        for rule in SmarthostConfiguration.ResponseRule.builtIn {
            #expect(rule.code != nil || rule.enhanced != nil || rule.text != nil, "\(rule.name)")
            #expect((rule.action == .retryLater || rule.action == .suspend) == (rule.delay != nil), "\(rule.name)")
        }
    }

    @Test func patterns() {
        #expect(SmarthostConfiguration.CodePattern("4xx")!.matches(421))
        #expect(!SmarthostConfiguration.CodePattern("45x")!.matches(421))
        #expect(SmarthostConfiguration.EnhancedCodePattern("4.7.65*")!.matches("4.7.650"))
        #expect(!SmarthostConfiguration.EnhancedCodePattern("4.7.65*")!.matches("4.7.6"))
        #expect(SmarthostConfiguration.EnhancedCodePattern("*.1.1")!.matches("5.1.1"))
        #expect(!SmarthostConfiguration.EnhancedCodePattern("*.1.1")!.matches("5.1.10"))
        for bad in ["", "4", "4.7", "4.7.28.1", "6.1.1", "4.a.1", "4..1", "4.7.1234", "4.*7.1"] {
            #expect(SmarthostConfiguration.EnhancedCodePattern(bad) == nil, "\(bad)")
        }
        for bad in ["", "4", "4xxx", "6xx", "4X1", "42 "] {
            #expect(SmarthostConfiguration.CodePattern(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct SiteTargetTests {
    @Test func candidatesFollowPreferenceAndShareEqualOnes() {
        let exchanges = [
            MailHost(name: "backup.test", preference: 20, addresses: ["127.0.0.9"]),
            MailHost(name: "a.test", preference: 10, addresses: ["127.0.0.2"]),
            MailHost(name: "b.test", preference: 10, addresses: ["127.0.0.3", "::1"]),
        ]
        var generator = SystemRandomNumberGenerator()
        var firsts: Set<String> = []
        for _ in 0..<100 {
            let candidates = SiteTargets.exchanges(exchanges, port: 25).candidates(using: &generator)
            #expect(candidates.count == 4)
            #expect(candidates.last?.host == "backup.test")
            firsts.insert(candidates[0].host)
        }
        #expect(firsts == ["a.test", "b.test"])
    }

    @Test func addressesAreCappedPerConnection() {
        let many = (0..<20).map { MailHost(name: "mx\($0).test", preference: $0, addresses: ["127.0.0.\($0 + 1)"]) }
        var generator = SystemRandomNumberGenerator()
        let candidates = SiteTargets.exchanges(many, port: 25).candidates(using: &generator)
        #expect(candidates.map(\.host) == ["mx0.test", "mx1.test", "mx2.test", "mx3.test", "mx4.test"])
    }
}
