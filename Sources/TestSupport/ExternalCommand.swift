import Foundation

/// What a program run by a test printed and how it ended.
public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
    public var errors: String
}

/// Runs a program to completion, waiting for it on a thread of its own so that Swift's
/// cooperative pool (two threads on a 2-core machine) is never blocked. Spawned with
/// posix_spawn and its output kept in files: Foundation's Process crashed the test runner
/// (SIGSEGV) when many ran at once.
public func runCommand(_ executable: String, _ arguments: [String]) async throws -> CommandResult {
    let base = NSTemporaryDirectory() + "command-\(UUID().uuidString)"
    defer {
        unlink(base + ".out")
        unlink(base + ".err")
    }
    let process = try ManagedProcess(
        name: (executable as NSString).lastPathComponent, executable: executable, arguments: arguments,
        logPath: base + ".out", errorLogPath: base + ".err")
    let status = try await process.waitForTermination()
    return CommandResult(
        status: status,
        output: String(decoding: FileManager.default.contents(atPath: base + ".out") ?? Data(), as: UTF8.self),
        errors: String(decoding: FileManager.default.contents(atPath: base + ".err") ?? Data(), as: UTF8.self))
}

/// Runs blocking work (starting a server and polling until it answers) on a thread of its own,
/// so that tests waiting for their servers do not starve the cooperative pool that other tests'
/// clients run on.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
