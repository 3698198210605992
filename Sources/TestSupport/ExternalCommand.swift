import Foundation
import Synchronization

/// What a program run by a test printed and how it ended.
public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
    public var errors: String
}

/// Runs a program to completion on a thread of its own, never blocking Swift's cooperative
/// pool: on a 2-core machine that pool has two threads, and a test blocking them would starve
/// the very server the program is talking to.
public func runCommand(_ executable: String, _ arguments: [String]) async throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe(), errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return await withCheckedContinuation { continuation in
        let thread = Thread {
            // Read both pipes to their end before waiting, or a chatty child blocks on a full pipe.
            let errorData = Mutex(Data())
            let errorRead = DispatchGroup()
            errorRead.enter()
            Thread {
                errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() }
                errorRead.leave()
            }.start()
            let outputData = output.fileHandleForReading.readDataToEndOfFile()
            errorRead.wait()
            process.waitUntilExit()
            continuation.resume(returning: CommandResult(
                status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
                errors: errorData.withLock { String(decoding: $0, as: UTF8.self) }))
        }
        thread.start()
    }
}

/// Runs blocking work (starting a server and polling until it answers) on a thread of its own,
/// so that tests waiting for their servers do not starve the cooperative pool that other tests'
/// clients run on.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
