import Yams

/// A line and column in the file, 1-based, as libyaml counts them.
struct TextPosition: Hashable {
    var line: Int
    var column: Int

    init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    init(_ mark: Mark) {
        self.init(line: mark.line, column: mark.column)
    }
}

/// `tenants.acme.max_message_size`, `routes[2].next_hop`.
struct KeyPath: CustomStringConvertible {
    private enum Component {
        case key(String)
        case index(Int)
    }

    private var components: [Component] = []

    func appending(_ key: String) -> KeyPath {
        var path = self
        path.components.append(.key(key))
        return path
    }

    subscript(index: Int) -> KeyPath {
        var path = self
        path.components.append(.index(index))
        return path
    }

    var description: String {
        var text = ""
        for component in components {
            switch component {
            case .index(let index):
                text += "[\(index)]"
            case .key(let key) where Names.matches(key, maximumLength: 64, first: Names.isTopicCharacter,
                                                   rest: Names.isTopicCharacter):
                text += text.isEmpty ? key : "." + key
            case .key(let key):
                text += "[\(Display.quoted(key, limit: 40))]"
            }
        }
        return text
    }
}

/// Walks the composed YAML tree, reads typed values and collects every problem with its position
/// and key path. Readers return nil after reporting a problem.
final class SchemaReader {
    let fileName: String
    /// Keys whose first character was replaced to get a duplicate key past Yams; see `YAMLDocument`.
    private let renamedKeys: [TextPosition: Unicode.Scalar]
    private(set) var diagnostics: [ConfigError.Diagnostic] = []

    init(fileName: String, renamedKeys: [TextPosition: Unicode.Scalar]) {
        self.fileName = fileName
        self.renamedKeys = renamedKeys
    }

    func report(_ position: TextPosition?, _ path: KeyPath, _ message: String) {
        diagnostics.append(ConfigError.Diagnostic(fileName: fileName, line: position?.line, column: position?.column,
                                                  path: path.description, message: message))
    }

    func report(_ node: Node, _ path: KeyPath, _ message: String) {
        report(node.mark.map(TextPosition.init), path, message)
    }

    // MARK: Maps and lists

    struct Entry {
        let key: String
        let keyNode: Node
        let value: Node
        let path: KeyPath
    }

    /// A map whose keys the schema fixes.
    struct Fields {
        let node: Node
        let path: KeyPath
        fileprivate let values: [String: Node]

        subscript(key: String) -> Node? { values[key] }

        func path(_ key: String) -> KeyPath { path.appending(key) }
    }

    /// The entries of a map in file order, without duplicates (which are reported).
    func entries(_ node: Node, _ path: KeyPath, expected: String = "a map") -> [Entry]? {
        guard case .mapping(let mapping) = node else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        var firstPositions: [String: TextPosition?] = [:]
        var entries: [Entry] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report(keyNode, path, "expected a string as key, got \(describe(keyNode))")
                continue
            }
            let key = restoredKey(scalar)
            let keyPath = path.appending(key)
            let position = keyNode.mark.map(TextPosition.init)
            if let first = firstPositions[key] {
                let firstText = first.map { " (first defined at \($0.line):\($0.column))" } ?? ""
                report(position, keyPath, "duplicate key" + firstText)
                continue
            }
            firstPositions[key] = position
            entries.append(Entry(key: key, keyNode: keyNode, value: value, path: keyPath))
        }
        return entries
    }

    /// A map with the keys `known`; other keys are reported, with a suggestion when one is close.
    func fields(_ node: Node, _ path: KeyPath, known: [String], expected: String = "a map") -> Fields? {
        guard let entries = entries(node, path, expected: expected) else { return nil }
        var values: [String: Node] = [:]
        for entry in entries {
            guard known.contains(entry.key) else {
                if let suggestion = Suggestion.closest(to: entry.key, among: known) {
                    report(entry.keyNode, entry.path, "unknown key (did you mean \"\(suggestion)\"?)")
                } else {
                    report(entry.keyNode, entry.path, "unknown key (expected one of \(known.joined(separator: ", ")))")
                }
                continue
            }
            values[entry.key] = entry.value
        }
        return Fields(node: node, path: path, values: values)
    }

    /// The value of a required key; reports a missing key at the map's position.
    func required(_ fields: Fields, _ key: String) -> Node? {
        guard let value = fields[key] else {
            report(fields.node, fields.path, "missing required key \"\(key)\"")
            return nil
        }
        return value
    }

    func list(_ node: Node, _ path: KeyPath, expected: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return Array(sequence)
    }

    // MARK: Scalars

    /// The text of a scalar, plain or quoted. A plain empty value, `~` or `null` is reported: YAML
    /// would read it as null, which is never a valid setting. So are YAML tags.
    func text(_ node: Node, _ path: KeyPath, expected: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        let tag = scalar.tag.description
        if !tag.isEmpty, scalar.style == .plain || tag != Self.stringTag {
            report(node, path, "expected \(expected), got a value with the YAML tag \(Self.shortTag(tag)) "
                + "(tags are not supported)")
            return nil
        }
        if scalar.style == .plain, Self.nullWords.contains(scalar.string) {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return scalar.string
    }

    /// A string accepted as it is, or whatever `validate` makes of it.
    func value<T>(_ node: Node, _ path: KeyPath, expected: String,
                  _ validate: (String) throws(ValueError) -> T) -> T? {
        guard let text = text(node, path, expected: expected) else { return nil }
        do {
            return try validate(text)
        } catch {
            report(node, path, error.message)
            return nil
        }
    }

    /// A string of 1 to `maximumLength` characters each satisfying `allowed`.
    func name(_ node: Node, _ path: KeyPath, expected: String, maximumLength: Int,
              first: (Unicode.Scalar) -> Bool, rest: (Unicode.Scalar) -> Bool) -> String? {
        guard let text = text(node, path, expected: expected) else { return nil }
        guard Names.matches(text, maximumLength: maximumLength, first: first, rest: rest) else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return text
    }

    /// A plain (unquoted) run of digits in `range`.
    func integer(_ node: Node, _ path: KeyPath, _ range: ClosedRange<Int>) -> Int? {
        let expected = "an integer between \(range.lowerBound) and \(range.upperBound)"
        guard let text = text(node, path, expected: expected) else { return nil }
        guard node.scalar?.style == .plain, case .value(let value) = Scalars.decimal(Substring(text)),
              range.contains(value) else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return value
    }

    /// A plain (unquoted) decimal number such as `2` or `1.5` in `range`.
    func number(_ node: Node, _ path: KeyPath, _ range: ClosedRange<Double>) -> Double? {
        let expected = "a number between \(range.lowerBound) and \(range.upperBound)"
        guard let text = text(node, path, expected: expected) else { return nil }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard node.scalar?.style == .plain, parts.allSatisfy({ Scalars.decimal($0) != .invalid }),
              let value = Double(text), range.contains(value) else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return value
    }

    /// A plain (unquoted) `true` or `false`.
    func boolean(_ node: Node, _ path: KeyPath) -> Bool? {
        let expected = "true or false"
        guard let text = text(node, path, expected: expected) else { return nil }
        guard node.scalar?.style == .plain, text == "true" || text == "false" else {
            report(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        return text == "true"
    }

    /// One of the raw values of `T`.
    func choice<T: RawRepresentable & CaseIterable>(_ node: Node, _ path: KeyPath) -> T? where T.RawValue == String {
        let names = T.allCases.map(\.rawValue)
        let expected = "one of " + names.joined(separator: ", ")
        guard let text = text(node, path, expected: expected) else { return nil }
        guard let value = T(rawValue: text) else {
            let hint = Suggestion.closest(to: text, among: names).map { " (did you mean \"\($0)\"?)" } ?? ""
            report(node, path, "expected \(expected), got \(describe(node))\(hint)")
            return nil
        }
        return value
    }

    func duration(_ node: Node, _ path: KeyPath, _ range: ClosedRange<Duration>) -> Duration? {
        guard let duration = value(node, path, expected: Expectation.duration, ConfigSyntax.duration) else {
            return nil
        }
        guard range.contains(duration) else {
            report(node, path, "expected a duration between \(ConfigSyntax.format(range.lowerBound)) and "
                + "\(ConfigSyntax.format(range.upperBound)), got \(describe(node))")
            return nil
        }
        return duration
    }

    func byteSize(_ node: Node, _ path: KeyPath, _ range: ClosedRange<ByteSize>) -> ByteSize? {
        guard let size = value(node, path, expected: Expectation.byteSize, ByteSize.init(parsing:)) else {
            return nil
        }
        guard range.contains(size) else {
            report(node, path, "expected a byte size between \(range.lowerBound) and \(range.upperBound), "
                + "got \(describe(node))")
            return nil
        }
        return size
    }

    func rate(_ node: Node, _ path: KeyPath) -> Rate? {
        value(node, path, expected: Expectation.rate, Rate.init(parsing:))
    }

    func hostPort(_ node: Node, _ path: KeyPath) -> HostPort? {
        value(node, path, expected: Expectation.hostPort, HostPort.init(parsing:))
    }

    func domain(_ node: Node, _ path: KeyPath) -> String? {
        value(node, path, expected: Expectation.domain, ConfigSyntax.domainName)
    }

    /// Values read by `read` from each element of a list; nil if the node is not a list.
    func elements<T>(_ node: Node, _ path: KeyPath, expected: String,
                     _ read: (Node, KeyPath) -> T?) -> [T]? {
        guard let nodes = list(node, path, expected: expected) else { return nil }
        return nodes.enumerated().compactMap { index, element in read(element, path[index]) }
    }

    // MARK: Describing what was found

    private static let nullWords: Set<String> = ["", "~", "null", "Null", "NULL"]
    private static let stringTag = "tag:yaml.org,2002:str"

    private static func shortTag(_ tag: String) -> String {
        tag.hasPrefix("tag:yaml.org,2002:") ? "!!" + tag.dropFirst("tag:yaml.org,2002:".count) : tag
    }

    /// What was found, for `expected ..., got <this>`.
    func describe(_ node: Node) -> String {
        switch node {
        case .mapping(let mapping):
            return mapping.isEmpty ? "an empty map" : "a map"
        case .sequence(let sequence):
            return sequence.isEmpty ? "an empty list" : "a list"
        case .alias:
            return "an alias"
        case .scalar(let scalar):
            if scalar.style != .plain { return "the quoted string \(Display.quoted(scalar.string))" }
            if scalar.string.isEmpty { return "an empty value" }
            if Self.nullWords.contains(scalar.string) { return "null" }
            return Display.quoted(scalar.string)
        }
    }

    private func restoredKey(_ scalar: Node.Scalar) -> String {
        guard let mark = scalar.mark, let original = renamedKeys[TextPosition(mark)] else { return scalar.string }
        var scalars = scalar.string.unicodeScalars
        scalars.replaceSubrange(scalars.startIndex..<scalars.index(after: scalars.startIndex), with: [original])
        return String(scalars)
    }
}

enum Suggestion {
    /// The candidate within edit distance 2 of `text` (the closest, the first of equals), if any;
    /// never one that shares nothing with a very short `text`.
    static func closest(to text: String, among candidates: [String]) -> String? {
        let source = Array(text.unicodeScalars)
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let target = Array(candidate.unicodeScalars)
            guard abs(source.count - target.count) <= 2 else { continue }
            let distance = editDistance(source, target)
            if distance <= 2, distance < source.count, distance < (best?.distance ?? .max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Levenshtein distance.
    static func editDistance(_ source: [Unicode.Scalar], _ target: [Unicode.Scalar]) -> Int {
        var previous = Array(0...target.count)
        for (i, sourceScalar) in source.enumerated() {
            var current = [i + 1]
            for (j, targetScalar) in target.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1,
                                   previous[j] + (sourceScalar == targetScalar ? 0 : 1)))
            }
            previous = current
        }
        return previous[target.count]
    }
}
