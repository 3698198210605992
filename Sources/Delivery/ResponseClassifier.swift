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

    private struct CompiledRule: Sendable {
        var rule: SmarthostConfiguration.ResponseRule
        var text: NSRegularExpression?
    }

    private let rules: [CompiledRule]

    /// Throws when a rule's text is not a regular expression (the configuration loader has
    /// already refused such a file).
    public init(rules: [SmarthostConfiguration.ResponseRule]) throws {
        self.rules = try rules.map { rule in
            CompiledRule(rule: rule, text: try rule.text.map { try NSRegularExpression(pattern: $0) })
        }
    }

    public func classify(_ reply: SMTPReply) -> Verdict {
        let text = reply.lines.joined(separator: " ")
        let enhanced = reply.enhancedCode?.description
        for compiled in rules where matches(compiled, reply.code, enhanced, text) {
            return Verdict(action: compiled.rule.action, delay: compiled.rule.delay, rule: compiled.rule.name)
        }
        return Verdict(action: reply.isPermanent ? .bounce : .retry, delay: nil, rule: nil)
    }

    private func matches(_ compiled: CompiledRule, _ code: Int, _ enhanced: String?, _ text: String) -> Bool {
        let rule = compiled.rule
        if let pattern = rule.code, !pattern.matches(code) { return false }
        if let pattern = rule.enhanced {
            guard let enhanced, pattern.matches(enhanced) else { return false }
        }
        if let regex = compiled.text {
            let range = NSRange(text.startIndex..., in: text)
            guard regex.firstMatch(in: text, range: range) != nil else { return false }
        }
        return true
    }
}
