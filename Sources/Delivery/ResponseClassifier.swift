import Foundation
import SMTPProtocol
import SmarthostConfig

/// Decides what a destination's non-2xx reply means, by the configured response rules (first
/// match wins) and then by its code: 4xx retried, 5xx bounced.
public struct ResponseClassifier: Sendable {
    public typealias Action = SmarthostConfiguration.ResponseRule.Action

    public struct Verdict: Sendable, Equatable {
        public var action: Action
        /// For `retryLater` and `suspend`: how long.
        public var delay: Duration?
        /// The rule that matched; nil when the code alone decided.
        public var rule: String?

        public var isFinal: Bool { action == .bounce }
    }

    private let rules: [(rule: SmarthostConfiguration.ResponseRule, matcher: ReplyMatcher)]

    /// Throws when a rule's text is not a regular expression (the configuration loader has
    /// already refused such a file).
    public init(rules: [SmarthostConfiguration.ResponseRule]) throws {
        self.rules = try rules.map { ($0, try ReplyMatcher($0.pattern)) }
    }

    public func classify(_ reply: SMTPReply) -> Verdict {
        for (rule, matcher) in rules where matcher.matches(reply) {
            return Verdict(action: rule.action, delay: rule.delay, rule: rule.name)
        }
        return Verdict(action: reply.isPermanent ? .bounce : .retry, delay: nil, rule: nil)
    }
}

/// A reply pattern of the configuration, its text compiled: every condition given must hold.
public struct ReplyMatcher: Sendable {
    private let pattern: SmarthostConfiguration.ReplyPattern
    private let text: NSRegularExpression?

    public init(_ pattern: SmarthostConfiguration.ReplyPattern) throws {
        self.pattern = pattern
        text = try pattern.text.map { try NSRegularExpression(pattern: $0) }
    }

    public func matches(_ reply: SMTPReply) -> Bool {
        if let code = pattern.code, !code.matches(reply.code) { return false }
        if let enhanced = pattern.enhanced {
            guard let actual = reply.enhancedCode?.description, enhanced.matches(actual) else { return false }
        }
        if let text {
            let joined = reply.lines.joined(separator: " ")
            guard text.firstMatch(in: joined, range: NSRange(joined.startIndex..., in: joined)) != nil else { return false }
        }
        return true
    }
}
