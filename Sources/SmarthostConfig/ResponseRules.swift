/// How a delivery node treats a destination's reply: `response_rules` in the configuration,
/// then (unless `delivery.default_response_rules: false`) the built-in rules below. The first
/// rule whose every given condition matches decides; a reply no rule matches is treated by
/// its code (2xx delivered, 4xx retried, 5xx bounced).
extension SmarthostConfiguration {
    public struct ResponseRule: Sendable, Equatable {
        public enum Action: String, Sendable, CaseIterable {
            /// A transient failure on the traffic class's retry schedule (even for a 5xx).
            case retry
            /// A transient failure retried no sooner than `delay`.
            case retryLater = "retry_later"
            /// A permanent failure (even for a 4xx): the recipient bounces.
            case bounce
            /// Back off: no further connection to the site from this node for `delay`. The
            /// recipient is retried when the suspension ends, and the attempt does not count
            /// towards its schedule.
            case suspend
        }

        /// Recorded in the events of the replies it matched.
        public var name: String
        /// A reply code such as `421`, or with `x` for any digit: `4xx`, `45x`.
        public var code: CodePattern?
        /// An enhanced status code such as `4.7.28`, or with `*` for any component: `4.7.*`.
        public var enhanced: EnhancedCodePattern?
        /// A regular expression (ICU syntax; `(?i)` for case-insensitive) searched in the
        /// reply's text, its lines joined by spaces.
        public var text: String?
        public var action: Action
        /// For `retry_later` the least wait before the next attempt; for `suspend` how long
        /// the site is suspended. Nil for the other actions.
        public var delay: Duration?

        public init(name: String, code: CodePattern? = nil, enhanced: EnhancedCodePattern? = nil, text: String? = nil,
                    action: Action, delay: Duration? = nil) {
            self.name = name
            self.code = code
            self.enhanced = enhanced
            self.text = text
            self.action = action
            self.delay = delay
        }

        /// Defaults from the large receivers' documented replies. Gmail: "421-4.7.28 ... rate
        /// limited" (back off, do not count it as a failure); Yahoo: "421 4.7.0 [TSS04] Messages
        /// from ... temporarily deferred due to unexpected volume or user complaints";
        /// Outlook/Office 365: "451 4.7.650 The mail server [ip] has been temporarily rate
        /// limited due to IP reputation" (slow down); everyone: 5.1.1 "user unknown" (bounce,
        /// even when a receiver says it with a 4xx), greylisting (try again soon but not at
        /// once), a full mailbox (try again much later).
        public static let builtIn: [ResponseRule] = [
            ResponseRule(name: "rate-limited-4.7.28", enhanced: EnhancedCodePattern("4.7.28"), action: .suspend,
                         delay: .seconds(900)),
            ResponseRule(name: "reputation-4.7.65x", enhanced: EnhancedCodePattern("4.7.65*"), action: .suspend,
                         delay: .seconds(1_800)),
            ResponseRule(name: "rate-limited-text", code: CodePattern("4xx"),
                         text: "(?i)rate[ -]?limit|too many (messages|connections|concurrent)|throttl",
                         action: .suspend, delay: .seconds(600)),
            ResponseRule(name: "reputation-text", code: CodePattern("4xx"),
                         text: "(?i)reputation|unsolicited|spamhaus|blocklist|blacklist|poor sender|temporarily deferred",
                         action: .suspend, delay: .seconds(1_800)),
            ResponseRule(name: "unknown-user", enhanced: EnhancedCodePattern("*.1.1"), action: .bounce),
            ResponseRule(name: "greylisted", code: CodePattern("4xx"), text: "(?i)gr[ae]ylist",
                         action: .retryLater, delay: .seconds(300)),
            ResponseRule(name: "mailbox-full", enhanced: EnhancedCodePattern("4.2.2"), action: .retryLater,
                         delay: .seconds(3_600)),
        ]
    }

    /// Three characters, each a digit or `x`; the first 2, 4 or 5 (or `x`).
    public struct CodePattern: Sendable, Equatable, CustomStringConvertible {
        public let description: String

        public init?(_ text: String) {
            let characters = Array(text.unicodeScalars)
            guard characters.count == 3, characters.allSatisfy({ $0 == "x" || Scalars.isDigit($0) }),
                  ["2", "4", "5", "x"].contains(characters[0]) else { return nil }
            description = text
        }

        public func matches(_ code: Int) -> Bool {
            let digits = Array(String(code).unicodeScalars)
            return digits.count == 3 && zip(description.unicodeScalars, digits).allSatisfy { $0 == "x" || $0 == $1 }
        }
    }

    /// `class.subject.detail`, each a number or `*`; the last may also end in `*` (`4.7.65*`).
    public struct EnhancedCodePattern: Sendable, Equatable, CustomStringConvertible {
        public let description: String
        private let components: [Substring]

        public init?(_ text: String) {
            let components = text.split(separator: ".", omittingEmptySubsequences: false)
            guard components.count == 3, components.allSatisfy({ component in
                let digits = component.last == "*" ? component.dropLast() : component
                return digits.count <= 3 && digits.unicodeScalars.allSatisfy(Scalars.isDigit)
                    && (component == "*" || !digits.isEmpty)
            }), ["2", "4", "5", "*"].contains(components[0]) else { return nil }
            description = text
            self.components = components
        }

        /// `code` as `4.7.28`.
        public func matches(_ code: String) -> Bool {
            let parts = code.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3 else { return false }
            return zip(components, parts).allSatisfy { pattern, part in
                pattern.last == "*" ? part.hasPrefix(pattern.dropLast()) : pattern == part
            }
        }

        public static func == (a: Self, b: Self) -> Bool { a.description == b.description }
    }
}

extension SmarthostConfiguration {
    /// The conditions a reply must meet: every one given (at least one is).
    public struct ReplyPattern: Sendable, Equatable {
        public var code: CodePattern?
        public var enhanced: EnhancedCodePattern?
        /// A regular expression (ICU syntax) searched in the reply's text, lines joined by spaces.
        public var text: String?

        public init(code: CodePattern? = nil, enhanced: EnhancedCodePattern? = nil, text: String? = nil) {
            self.code = code
            self.enhanced = enhanced
            self.text = text
        }
    }

    /// Traffic shaping: when destinations' replies match `pattern` (`threshold` times within
    /// `window`, counted cluster-wide), every delivery node applies `action` to the traffic
    /// from that pool to that site (or to that tenant) for `duration`.
    public struct ShapingRule: Sendable, Equatable {
        public enum Action: String, Sendable, CaseIterable {
            /// Lower the message rate to `messageRate`.
            case messageRate = "message_rate"
            /// Lower the concurrent connections to `maxConnections`.
            case maxConnections = "max_connections"
            /// No connection to the site from the pool.
            case suspend
            /// None of the tenant's mail is sent, to any destination.
            case suspendTenant = "suspend_tenant"
        }

        public var name: String
        public var pattern: ReplyPattern
        public var threshold: Int
        public var window: Duration
        public var action: Action
        public var messageRate: Rate?
        public var maxConnections: Int?
        public var duration: Duration

        public init(name: String, pattern: ReplyPattern, threshold: Int = 1, window: Duration = .seconds(3_600),
                    action: Action, messageRate: Rate? = nil, maxConnections: Int? = nil, duration: Duration) {
            self.name = name
            self.pattern = pattern
            self.threshold = threshold
            self.window = window
            self.action = action
            self.messageRate = messageRate
            self.maxConnections = maxConnections
            self.duration = duration
        }
    }
}

extension SmarthostConfiguration.ResponseRule {
    public var pattern: SmarthostConfiguration.ReplyPattern {
        SmarthostConfiguration.ReplyPattern(code: code, enhanced: enhanced, text: text)
    }
}
