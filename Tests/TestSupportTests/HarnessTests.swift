import Foundation
import Testing
@testable import TestSupport

/// The harness must fail loudly, with the server's own words, when a server cannot start,
/// and must leave no process behind.
@Suite struct HarnessTests {
    @Test func aServerThatExitsDuringStartUpFailsWithItsLog() throws {
        let process = try ManagedProcess(name: "doomed", executable: "/bin/sh",
                                         arguments: ["-c", "echo 'config error: port in use'; exit 3"],
                                         logPath: NSTemporaryDirectory() + "doomed-\(UUID().uuidString).log")
        #expect {
            try waitUntilReady(process, timeout: .seconds(10)) { false }
        } throws: { error in
            let failure = error as? ServerStartError
            return failure?.reason == "it exited during start-up" && failure?.log.contains("config error: port in use") == true
        }
    }

    @Test func aServerThatNeverAnswersIsStoppedAndFailsWithItsLog() throws {
        let process = try ManagedProcess(name: "silent", executable: "/bin/sh",
                                         arguments: ["-c", "echo 'listening soon'; exec sleep 30"],
                                         logPath: NSTemporaryDirectory() + "silent-\(UUID().uuidString).log")
        #expect {
            try waitUntilReady(process, timeout: .milliseconds(500)) { false }
        } throws: { error in
            (error as? ServerStartError)?.log.contains("listening soon") == true
        }
        #expect(!process.isRunning, "the harness stops what it started")
        #expect(!FileManager.default.fileExists(atPath: "\(ManagedProcess.pidDirectory)/\(process.pid)"))
    }

    @Test func aMissingProgramIsNamed() {
        #expect {
            _ = try ManagedProcess(name: "ghost", executable: "/nonexistent/ghost-server", arguments: [], logPath: "/dev/null")
        } throws: { error in
            (error as? ServerStartError)?.reason.contains("/nonexistent/ghost-server") == true
        }
    }

    @Test func stopReachesAProcessWithTheDefaultSignalHandlers() throws {
        // SIGTERM must arrive even though the test runs on a Swift concurrency thread, whose
        // signal mask the child would otherwise inherit.
        let process = try ManagedProcess(name: "sleeper", executable: "/bin/sleep", arguments: ["30"],
                                         logPath: "/dev/null")
        let started = ContinuousClock.now
        process.stop(grace: .seconds(20))
        #expect(!process.isRunning)
        #expect(ContinuousClock.now - started < .seconds(10), "SIGTERM was not delivered; stop fell back to SIGKILL")
    }
}
