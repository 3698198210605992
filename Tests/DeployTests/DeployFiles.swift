import Foundation
import SmarthostConfig
import Testing
import Yams

/// The repository's root directory, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The files of deploy/ and the helpers the deployment tests share.
enum Deploy {
    /// The text of a file of the repository, by its path from the root; nil if it cannot be read.
    static func text(_ path: String) -> String? {
        try? String(contentsOf: repositoryRoot.appendingPathComponent(path), encoding: .utf8)
    }

    static func exists(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: repositoryRoot.appendingPathComponent(path).path)
    }

    /// Every file under `folder` (a path from the root) whose name ends in one of `endings`,
    /// as paths from the root, sorted.
    static func files(under folder: String, endingIn endings: [String]) -> [String] {
        let base = repositoryRoot.appendingPathComponent(folder)
        guard let walker = FileManager.default.enumerator(atPath: base.path) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if endings.contains(where: { relative.hasSuffix($0) }) { found.append(folder + "/" + relative) }
        }
        return found.sorted()
    }

    /// The YAML documents of a file (empty documents left out); throws the parser's error.
    static func documents(_ path: String) throws -> [Node] {
        guard let text = text(path) else { throw DeployFileError("\(path): cannot be read") }
        return try documents(text: text)
    }

    /// The YAML documents of a text. Yams's sequence keeps an error in a later document to itself
    /// (it just ends), so it is asked for one at the end.
    static func documents(text: String) throws -> [Node] {
        var sequence = try compose_all(yaml: text)
        var nodes: [Node] = []
        while let node = sequence.next() {
            if node.mapping.map({ !$0.isEmpty }) ?? node.sequence.map({ !$0.isEmpty }) ?? !(node.string ?? "").isEmpty {
                nodes.append(node)
            }
        }
        if let error = sequence.error { throw error }
        return nodes
    }

    /// The admin token the tests give the rendered configurations.
    static let testToken = "0123456789abcdef0123456789abcdef"

    /// Renders `template` as the image's entrypoint does for a node (deploy/docker/entrypoint.sh
    /// --render-only, run by /bin/sh) and loads the result with the real loader.
    /// `origin` names the template in errors (line numbers are the template's: rendering keeps lines).
    static func renderAndLoad(template: String, origin: String, nodeID: String, nodeIP: String = "10.1.2.3",
                              token: String = testToken) throws -> (configuration: SmarthostConfiguration, text: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let templatePath = directory.appendingPathComponent("cluster.yaml.in").path
        let tokenPath = directory.appendingPathComponent("admin_token").path
        let configPath = directory.appendingPathComponent("run/cluster.yaml").path
        try template.write(toFile: templatePath, atomically: true, encoding: .utf8)
        try (token + "\n").write(toFile: tokenPath, atomically: true, encoding: .utf8)
        let result = try run("/bin/sh", [repositoryRoot.appendingPathComponent("deploy/docker/entrypoint.sh").path, "--render-only"],
                             environment: ["PATH": "/usr/bin:/bin", "SMARTHOST_CONFIG_TEMPLATE": templatePath,
                                           "SMARTHOST_CONFIG": configPath, "SMARTHOST_ADMIN_TOKEN_FILE": tokenPath,
                                           "SMARTHOST_NODE_ID": nodeID, "SMARTHOST_NODE_IP": nodeIP])
        guard result.status == 0 else {
            throw DeployFileError("\(origin): deploy/docker/entrypoint.sh --render-only exited with \(result.status): \(result.errors)")
        }
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        do {
            return (try SmarthostConfiguration.load(path: configPath), text)
        } catch {
            throw DeployFileError("\(origin), rendered for \(nodeID), does not load: "
                                  + error.description.replacingOccurrences(of: configPath, with: "cluster.yaml.in"))
        }
    }

    struct CommandResult {
        var status: Int32
        var output: String
        var errors: String
    }

    /// Runs a program to its end; its output is small (help texts, the entrypoint's messages).
    static func run(_ program: String, _ arguments: [String], environment: [String: String]? = nil) throws -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        let errorData = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
                             errors: String(decoding: errorData, as: UTF8.self))
    }

    /// The `smarthost` binary built with the tests (`swift build --build-tests`): beside the test
    /// runner, or in .build/debug.
    static var smarthostBinary: String {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for folder in [runner.deletingLastPathComponent(), repositoryRoot.appendingPathComponent(".build/debug")] {
            let candidate = folder.appendingPathComponent("smarthost").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return repositoryRoot.appendingPathComponent(".build/debug/smarthost").path
    }

    /// Whether `smarthost NAME --help` succeeds: NAME is a subcommand of the real binary.
    static func isSubcommand(_ name: String) throws -> Bool {
        guard FileManager.default.isExecutableFile(atPath: smarthostBinary) else {
            throw DeployFileError("\(smarthostBinary) is missing: build it with swift build --build-tests")
        }
        guard !name.hasPrefix("-") else { return false }
        let result = try run(smarthostBinary, [name, "--help"])
        return result.status == 0 && result.output.contains("smarthost \(name)")
    }

    /// The value following `option` in an argument list.
    static func option(_ option: String, in arguments: [String]) -> String? {
        guard let index = arguments.firstIndex(of: option), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }
}

struct DeployFileError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Node {
    /// The node at a path of mapping keys.
    subscript(path path: String...) -> Node? {
        var node: Node? = self
        for key in path { node = node?[key] }
        return node
    }

    /// The items of a sequence, or none.
    var items: [Node] { sequence.map(Array.init) ?? [] }

    /// A mapping of scalars as strings (labels, selectors, environment variables); empty otherwise.
    var strings: [String: String] {
        var result: [String: String] = [:]
        for (key, value) in mapping ?? [:] {
            if let key = key.string, let value = value.string { result[key] = value }
        }
        return result
    }

    /// A sequence of scalars as strings (args, command).
    var stringItems: [String] { items.compactMap(\.string) }
}
