import Yams
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension SmarthostConfiguration {
    /// Files larger than this are refused (so that a wrong path such as /dev/zero fails quickly).
    public static let maximumFileSize = ByteSize.mebibytes(16)

    /// Reads and validates the configuration file at `path`. Errors name the file as `path` is written.
    ///
    /// - Throws: `ConfigError` listing every problem: the file cannot be read (with the OS reason), is
    ///   not UTF-8, is not valid YAML, or does not follow the schema in docs/configuration.md.
    public static func load(path: String) throws(ConfigError) -> SmarthostConfiguration {
        try parse(yaml: ConfigFile.contents(of: path), fileName: path)
    }

    /// Validates the configuration in `yaml`; `fileName` is used in error messages only.
    ///
    /// - Throws: `ConfigError` listing every problem, sorted by position.
    public static func parse(yaml: String, fileName: String) throws(ConfigError) -> SmarthostConfiguration {
        let document = try YAMLDocument(yaml: yaml, fileName: fileName)
        let reader = SchemaReader(fileName: fileName, renamedKeys: document.renamedKeys)
        guard let configuration = reader.configuration(document.root) else {
            throw ConfigError(diagnostics: reader.diagnostics)
        }
        return configuration
    }
}

enum ConfigFile {
    static func contents(of path: String) throws(ConfigError) -> String {
        func failure(_ message: String, at position: TextPosition? = nil) -> ConfigError {
            ConfigError(diagnostics: [ConfigError.Diagnostic(fileName: path, line: position?.line,
                                                             column: position?.column, path: "", message: message)])
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure("cannot open the file: \(systemError(errno))") }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw failure("cannot read the file: \(systemError(code))")
            }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
            if bytes.count > SmarthostConfiguration.maximumFileSize.bytes {
                throw failure("the file is larger than \(SmarthostConfiguration.maximumFileSize), "
                              + "the limit for a configuration file")
            }
        }
        var scalars = String.UnicodeScalarView()
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var position = TextPosition(line: 1, column: 1)
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                scalars.append(scalar)
                position = scalar == "\n" ? TextPosition(line: position.line + 1, column: 1)
                    : TextPosition(line: position.line, column: position.column + 1)
            case .emptyInput:
                return String(scalars)
            case .error:
                throw failure("the file is not UTF-8 text (invalid byte sequence)", at: position)
            }
        }
    }

    private static func systemError(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}

/// The YAML tree of a configuration file, composed so that hostile input stays cheap and every
/// problem keeps its position.
///
/// Anchors and aliases are rejected. Yams resolves aliases while composing and hashes every mapping
/// key to find duplicates, so a document whose keys are alias bombs would take exponential time in
/// `compose` itself. The text is therefore first composed with every `*` replaced by a private-use
/// character: that copy has no aliases, so composing it is linear, and if it has no anchors the
/// original cannot have working aliases either. Only then is the original composed.
///
/// Yams stops at the first mapping with duplicate keys and reports only the first occurrence. To
/// report duplicates like any other problem (at the second occurrence, with the key path, among all
/// other problems), the first character of the reported key is replaced by a private-use character
/// (a different one each time) and the text composed again; `renamedKeys` lets the schema reader
/// restore the key.
struct YAMLDocument {
    let root: Node?
    /// The original first character of each renamed key, by the key's position.
    let renamedKeys: [TextPosition: Unicode.Scalar]

    private static let aliasStandIn: Unicode.Scalar = "\u{E000}"
    /// Renamed keys start with U+E001, U+E002, ...: each differs from every other key.
    private static let firstRenamedKeyStandIn: UInt32 = 0xE001
    /// Each renamed key costs another composition; past this many the duplicate is reported as fatal.
    static let maximumRenamedKeys = 20

    init(yaml: String, fileName: String) throws(ConfigError) {
        var original = Array(yaml.unicodeScalars)
        if original.first == "\u{FEFF}" { original.removeFirst() }
        var withoutAliases = original.map { $0 == "*" ? Self.aliasStandIn : $0 }
        var renamed: [TextPosition: Unicode.Scalar] = [:]
        while true {
            let parser: Parser
            let root: Node?
            do {
                parser = try Parser(yaml: Self.string(withoutAliases))
                root = try parser.singleRoot()
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                let position = TextPosition(context.mark)
                let offset = Self.offset(of: position, in: withoutAliases)
                if let offset, original[offset] == "*" {
                    throw ConfigError(diagnostics: [ConfigError.Diagnostic(
                        fileName: fileName, line: position.line, column: position.column, path: "",
                        message: Self.anchorMessage)])
                }
                guard renamed.count < Self.maximumRenamedKeys, renamed[position] == nil, let offset,
                      let target = Self.renameTarget(at: offset, in: original),
                      let standIn = Unicode.Scalar(Self.firstRenamedKeyStandIn + UInt32(renamed.count)) else {
                    throw ConfigError(diagnostics: [Self.duplicateKey(duplicates, at: position, fileName: fileName)])
                }
                renamed[position] = original[target]
                original[target] = standIn
                withoutAliases[target] = standIn
                continue
            } catch {
                throw ConfigError(diagnostics: [Self.diagnostic(for: error, in: withoutAliases, fileName: fileName)])
            }
            let anchors = withExtendedLifetime(parser) { Self.anchors(in: root, fileName: fileName) }
            guard anchors.isEmpty else { throw ConfigError(diagnostics: anchors) }
            break
        }
        do {
            root = try Parser(yaml: Self.string(original)).singleRoot()
        } catch {
            throw ConfigError(diagnostics: [Self.diagnostic(for: error, in: original, fileName: fileName)])
        }
        renamedKeys = renamed
    }

    private static func string(_ scalars: [Unicode.Scalar]) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    // MARK: Positions

    private static let lineBreaks: Set<Unicode.Scalar> = ["\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"]

    private static func isBlankOrBreak(_ scalar: Unicode.Scalar) -> Bool {
        scalar == " " || scalar == "\t" || lineBreaks.contains(scalar)
    }

    /// The index of the scalar at `position`, counting lines and columns as libyaml does.
    private static func offset(of position: TextPosition, in text: [Unicode.Scalar]) -> Int? {
        var current = TextPosition(line: 1, column: 1)
        var index = 0
        while index < text.count {
            if current == position { return index }
            index = advance(&current, from: index, in: text)
        }
        return nil
    }

    /// The position of the scalar at `offset`.
    private static func position(of offset: Int, in text: [Unicode.Scalar]) -> TextPosition {
        var current = TextPosition(line: 1, column: 1)
        var index = 0
        while index < min(offset, text.count) {
            index = advance(&current, from: index, in: text)
        }
        return current
    }

    /// Moves past the scalar (or CR LF) at `index`, updating `position`; returns the next index.
    private static func advance(_ position: inout TextPosition, from index: Int, in text: [Unicode.Scalar]) -> Int {
        let scalar = text[index]
        if scalar == "\r", index + 1 < text.count, text[index + 1] == "\n" {
            position = TextPosition(line: position.line + 1, column: 1)
            return index + 2
        }
        position = lineBreaks.contains(scalar) ? TextPosition(line: position.line + 1, column: 1)
            : TextPosition(line: position.line, column: position.column + 1)
        return index + 1
    }

    /// Which scalar of the key starting at `offset` can be replaced without changing how the text
    /// parses: the first character of a plain key or of the contents of a quoted key. Nil for keys
    /// that are collections, aliases, tagged, empty, or start with an escape or a blank.
    private static func renameTarget(at offset: Int, in text: [Unicode.Scalar]) -> Int? {
        let first = text[offset]
        if first == "\"" || first == "'" {
            let target = offset + 1
            guard target < text.count, text[target] != first, text[target] != "\\",
                  !isBlankOrBreak(text[target]) else { return nil }
            return target
        }
        guard !isBlankOrBreak(first), !"[]{},|>!&*%@`#".unicodeScalars.contains(first) else { return nil }
        if "-?:".unicodeScalars.contains(first) {
            guard offset + 1 < text.count, !isBlankOrBreak(text[offset + 1]) else { return nil }
        }
        return offset
    }

    // MARK: Diagnostics

    private static let anchorMessage =
        "YAML anchors (&name) and aliases (*name) are not supported; write the value out in full"

    /// Every node with an anchor (the nodes below it are not visited).
    private static func anchors(in root: Node?, fileName: String) -> [ConfigError.Diagnostic] {
        var found: [ConfigError.Diagnostic] = []
        var pending: [(node: Node, path: KeyPath)] = root.map { [($0, KeyPath())] } ?? []
        while let item = pending.popLast() {
            if let anchor = item.node.anchor {
                found.append(ConfigError.Diagnostic(
                    fileName: fileName, line: item.node.mark?.line, column: item.node.mark?.column,
                    path: item.path.description,
                    message: anchorMessage + " (found &\(anchor.rawValue.prefix(40)))"))
                continue
            }
            switch item.node {
            case .mapping(let mapping):
                for (key, value) in mapping {
                    let path = item.path.appending(key.string ?? "?")
                    pending.append((key, path))
                    pending.append((value, path))
                }
            case .sequence(let sequence):
                for (index, element) in sequence.enumerated() {
                    pending.append((element, item.path[index]))
                }
            case .scalar, .alias:
                break
            }
        }
        return found
    }

    private static func duplicateKey(_ duplicates: [String], at position: TextPosition,
                                     fileName: String) -> ConfigError.Diagnostic {
        let key = duplicates.first.map { name in
            " " + Display.quoted(String(String.UnicodeScalarView(name.unicodeScalars.map {
                $0 == aliasStandIn ? "*" : $0
            })), limit: 40)
        } ?? ""
        return ConfigError.Diagnostic(fileName: fileName, line: position.line, column: position.column, path: "",
                                      message: "duplicate key\(key) (each key may appear only once in a map)")
    }

    private static func diagnostic(for error: any Error, in text: [Unicode.Scalar],
                                   fileName: String) -> ConfigError.Diagnostic {
        func diagnostic(_ position: TextPosition?, _ message: String) -> ConfigError.Diagnostic {
            ConfigError.Diagnostic(fileName: fileName, line: position?.line, column: position?.column, path: "",
                                   message: message)
        }
        guard let yamlError = error as? YamlError else { return diagnostic(nil, "cannot read the YAML: \(error)") }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return diagnostic(TextPosition(mark), syntaxMessage(problem, context))
        case .reader(let problem, let offset, let value, let yaml):
            let position = offset.flatMap { offset in
                yaml.index(yaml.startIndex, offsetBy: offset, limitedBy: yaml.endIndex).map { index in
                    Self.position(of: yaml.unicodeScalars.distance(from: yaml.startIndex, to: index), in: text)
                }
            }
            let found = Unicode.Scalar(UInt32(bitPattern: value)).map { " (found \(Display.scalar($0)))" } ?? ""
            return diagnostic(position, "YAML syntax error: \(problem)\(found)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return duplicateKey(duplicates, at: TextPosition(context.mark), fileName: fileName)
        default:
            return diagnostic(nil, "cannot read the YAML: \(yamlError)")
        }
    }

    private static func syntaxMessage(_ problem: String, _ context: YamlError.Context?) -> String {
        if problem == "found undefined alias" { return anchorMessage }
        guard let context else { return "YAML syntax error: \(problem)" }
        if problem.hasPrefix("Maximum nesting level reached") {
            return "YAML syntax error: maximum nesting level reached"
        }
        if context.text == "expected a single document in the stream" {
            return "YAML syntax error: expected a single document, but found another one"
        }
        var message = "YAML syntax error: \(problem) (\(context.text) at \(context.mark.line):\(context.mark.column))"
        if context.text.hasPrefix("while scanning an alias") || context.text.hasPrefix("while scanning an anchor") {
            message += "; quote values that start with * or &"
        }
        return message
    }
}
