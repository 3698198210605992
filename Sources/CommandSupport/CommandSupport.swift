import ArgumentParser
import Foundation
import Reconciliation
import SmarthostConfig

/// `--config FILE`, loaded and validated; a bad file stops the command with every error in it.
public struct ConfigFileOption: ParsableArguments {
    @Option(name: .long, help: "The cluster configuration file (YAML; see docs/configuration.md).")
    public var config: String

    public init() {}

    public func load() throws -> SmarthostConfiguration {
        try loadConfiguration(config)
    }
}

/// Loads a configuration file; its errors go to standard error and end the command with status 2.
public func loadConfiguration(_ path: String) throws -> SmarthostConfiguration {
    do {
        return try SmarthostConfiguration.load(path: path)
    } catch {
        printError(error.description)
        throw ExitCode(2)
    }
}

public func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Prints JSON as the reports and admin answers are written (sorted snake_case keys), so that
/// scripts and diffs see a stable shape.
public func printJSON<T: Encodable>(_ value: T) throws {
    print(try ReportFormat.encodedJSON(value), terminator: "")
}
