import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a server a test needs could not be started; carries the server's own log so the
/// failure explains itself. Tests never skip on this: they fail.
public struct ServerStartError: Error, CustomStringConvertible {
    public let server: String
    public let reason: String
    public let log: String

    public var description: String {
        "\(server) did not start: \(reason)\n--- last lines of its log ---\n\(log)"
    }
}

/// A child process started by a test, stopped by its PID however the test ends.
///
/// Its PID is also written to a pid directory so that `scripts/test` can stop anything a
/// crashed test run left behind (a crash skips every `defer`).
public final class ManagedProcess: Sendable {
    public let name: String
    public let pid: pid_t
    public let logPath: String
    private let pidFile: String

    /// The folder where every test-started process records its PID.
    public static var pidDirectory: String {
        ProcessInfo.processInfo.environment["SMARTHOST_TEST_PIDDIR"] ?? "/tmp/smarthost-test-pids"
    }

    /// Starts `executable` with `arguments`; stdout goes to `logPath`, stderr to `errorLogPath`
    /// (to `logPath` as well when nil), stdin is /dev/null.
    public init(name: String, executable: String, arguments: [String], logPath: String,
                errorLogPath: String? = nil, environment: [String: String] = [:]) throws {
        guard access(executable, X_OK) == 0 else {
            throw ServerStartError(server: name, reason: "\(executable) is not an executable file (run scripts/setup)", log: "")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let errorLogPath {
            posix_spawn_file_actions_addopen(&actions, 2, errorLogPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }

        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let argv = [executable] + arguments
        let envp = env.map { "\($0.key)=\($0.value)" }

        // Swift's concurrency threads block some signals (SIGTERM among them) and a spawned
        // child inherits the mask: give it an empty mask and default handlers, or it would
        // never see the SIGTERM that `stop()` sends.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var childPID: pid_t = 0
        let rc = withCStrings(argv) { cArgv in
            withCStrings(envp) { cEnv in
                posix_spawn(&childPID, executable, &actions, &attributes, cArgv, cEnv)
            }
        }
        guard rc == 0 else {
            throw ServerStartError(server: name, reason: "posix_spawn failed: \(String(cString: strerror(rc)))", log: "")
        }
        self.name = name
        self.pid = childPID
        self.logPath = logPath
        try? FileManager.default.createDirectory(atPath: Self.pidDirectory, withIntermediateDirectories: true)
        self.pidFile = "\(Self.pidDirectory)/\(childPID)"
        try? "\(executable)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
    }

    /// True while the child has not exited. Reaps it when it has.
    public var isRunning: Bool {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        return rc == 0
    }

    /// Waits for a child that ends by itself (a script) and returns its exit code, or nil if
    /// it is still running after `limit` (it is then left running; `stop()` ends it).
    public func exitCode(within limit: Duration) async throws -> Int32? {
        let pid = self.pid
        return try await offPool {
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { return (status >> 8) & 0xff }
                usleep(50_000)
            }
            return nil
        }
    }

    /// Waits, on a thread of its own, for a child that ends by itself; its exit code, or 128 plus
    /// the signal that ended it (as a shell reports it).
    public func waitForTermination() async throws -> Int32 {
        let pid = self.pid
        return try await offPool {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 {
                guard errno == EINTR else { throw ServerStartError(server: "waitpid", reason: String(cString: strerror(errno)), log: "") }
            }
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
    }

    public func signal(_ sig: Int32) {
        kill(pid, sig)
    }

    /// SIGSTOP, returning only once the kernel reports the process stopped: kill() merely
    /// queues the signal, and a server on the other core can still answer a request meanwhile.
    public func suspend() {
        kill(pid, SIGSTOP)
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline, !isStopped { usleep(1_000) }
    }

    /// The state letter in /proc/PID/stat is T (stopped) or t (tracing stop).
    private var isStopped: Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].drop { $0 == " " }.first
        return state == "T" || state == "t"
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until the child is reaped.
    public func stop(grace: Duration = .seconds(5)) {
        defer { unlink(pidFile) }
        guard isRunning else { return }
        kill(pid, SIGCONT)  // a stopped process would never see the SIGTERM
        kill(pid, SIGTERM)
        if waitForExit(within: grace) { return }
        kill(pid, SIGKILL)
        _ = waitForExit(within: .seconds(10))
    }

    /// SIGKILL and reap: a crash, as far as the child's peers can tell.
    public func crash() {
        defer { unlink(pidFile) }
        kill(pid, SIGKILL)
        _ = waitForExit(within: .seconds(10))
    }

    private func waitForExit(within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if !isRunning { return true }
            usleep(20_000)
        }
        return !isRunning
    }

    /// The last `lines` lines of the child's log, for error messages.
    public func logTail(lines: Int = 40) -> String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return "(no log at \(logPath))" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    deinit {
        stop(grace: .seconds(2))
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
