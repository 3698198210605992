import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Jobs for the spool's threads. The writer takes everything queued at once (one transaction
/// for all of it); a reader takes one job at a time.
final class JobQueue<Job: Sendable>: Sendable {
    private struct State {
        var jobs: [Job] = []
        var head = 0
        var sleepers = 0
        var closed = false
    }

    private let state = Mutex(State())
    /// Signalled once per sleeper woken, so no wake-up is lost between a thread finding the
    /// queue empty and it starting to wait.
    private let wakeUp = DispatchSemaphore(value: 0)

    /// False once the queue is closed: the job will never run.
    func submit(_ job: Job) -> Bool {
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            guard !state.closed else { return (false, false) }
            state.jobs.append(job)
            guard state.sleepers > 0 else { return (true, false) }
            state.sleepers -= 1
            return (true, true)
        }
        if wake { wakeUp.signal() }
        return accepted
    }

    /// Waits for work. Nil once the queue is closed and every job was taken.
    func take(all: Bool) -> [Job]? {
        while true {
            let taken = state.withLock { state -> [Job]?? in
                if state.head < state.jobs.count {
                    let jobs: [Job]
                    if all {
                        jobs = Array(state.jobs[state.head...])
                        state.jobs.removeAll(keepingCapacity: true)
                        state.head = 0
                    } else {
                        jobs = [state.jobs[state.head]]
                        state.head += 1
                        if state.head == state.jobs.count || state.head > 1024 {
                            state.jobs.removeFirst(state.head)
                            state.head = 0
                        }
                    }
                    return .some(jobs)
                }
                if state.closed { return .some(nil) }
                state.sleepers += 1
                return nil
            }
            if let taken { return taken }
            wakeUp.wait()
        }
    }

    /// Refuses new jobs; the threads finish the queued ones, then `take` returns nil.
    func close() {
        let sleepers = state.withLock { state -> Int in
            state.closed = true
            defer { state.sleepers = 0 }
            return state.sleepers
        }
        for _ in 0..<sleepers { wakeUp.signal() }
    }

    var pending: Int { state.withLock { $0.jobs.count - $0.head } }
}

/// A write operation waiting for the writer thread.
struct WriteJob: Sendable {
    /// For errors: `insert <id>`, `settle <id>`...
    let operation: String
    /// Runs inside the batch's transaction, in a savepoint of its own; returns what tells the
    /// caller once the transaction has committed.
    let apply: @Sendable (Connection) throws(SpoolError) -> @Sendable () -> Void
    /// Tells the caller its operation did not happen.
    let fail: @Sendable (SpoolError) -> Void
}

/// A read operation for one of the reader threads (it resumes its caller itself).
struct ReadJob: Sendable {
    let run: @Sendable (Connection) -> Void
}

/// A value handed from one thread to another, with a semaphore to wait for it.
final class Handoff<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    func put(_ newValue: Value) {
        value.withLock { $0 = newValue }
        ready.signal()
    }

    func wait() -> Value {
        ready.wait()
        return value.withLock { $0! }
    }
}

/// Starts a named thread of its own: SQLite calls block (fsync, disk reads), so they never run
/// on Swift's cooperative pool.
func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}

/// close(2), which `Spool.close()` hides inside the class.
func closeDescriptor(_ descriptor: Int32) {
    _ = close(descriptor)
}

/// open(2) of a directory, for its lock.
func openDirectory(_ path: String) -> Int32 {
    open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
}
