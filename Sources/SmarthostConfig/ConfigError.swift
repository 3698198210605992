/// Everything that is wrong with a configuration file, in the order of the positions in the file.
///
/// `description` is what an operator sees: one line per problem, each
/// `file:line:column: key.path: what is wrong`, for example
/// `cluster.yaml:12:5: kafka.delivery_timeout: expected a duration such as 500ms, 10s, 5m, 6h or 2d, got "ten"`.
/// The position is left out when it is unknown (a file that cannot be read) and the key path
/// when the problem is not about one key (a YAML syntax error).
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One problem at one place in the file.
    public struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
        /// The file name as given to `load(path:)` or `parse(yaml:fileName:)`.
        public var fileName: String
        /// 1-based line, when known.
        public var line: Int?
        /// 1-based column counted in Unicode scalars, when known.
        public var column: Int?
        /// Dotted key path such as `tenants.acme.max_message_size` or `routes[2].next_hop`;
        /// empty when the problem is not about one key.
        public var path: String
        /// What is wrong, usually `expected ..., got ...`.
        public var message: String

        public init(fileName: String, line: Int?, column: Int?, path: String, message: String) {
            self.fileName = fileName
            self.line = line
            self.column = column
            self.path = path
            self.message = message
        }

        public var description: String {
            var text = fileName
            if let line {
                text += ":\(line)"
                if let column { text += ":\(column)" }
            }
            text += ": "
            if !path.isEmpty { text += path + ": " }
            return text + message
        }
    }

    /// The problems, sorted by position (problems without a position first); never empty.
    public var diagnostics: [Diagnostic]

    /// Sorts `diagnostics` by position, keeping the order of problems found at the same position.
    public init(diagnostics: [Diagnostic]) {
        self.diagnostics = diagnostics.enumerated().sorted { lhs, rhs in
            let left = (lhs.element.line ?? 0, lhs.element.column ?? 0, lhs.offset)
            let right = (rhs.element.line ?? 0, rhs.element.column ?? 0, rhs.offset)
            return left < right
        }.map(\.element)
    }

    /// All problems, one per line.
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}
