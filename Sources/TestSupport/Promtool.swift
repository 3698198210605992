import Foundation

/// What `promtool check metrics` says about a Prometheus text exposition: empty when it accepts
/// it, else its exit status and every line it printed. Throws when promtool is not installed
/// (scripts/setup installs it with Debian's `prometheus` package).
public func promtoolProblems(_ exposition: String) async throws -> String {
    let promtool = try findExecutable("promtool")
    let file = NSTemporaryDirectory() + "exposition-\(UUID().uuidString).prom"
    try exposition.write(toFile: file, atomically: true, encoding: .utf8)
    defer { unlink(file) }
    // promtool reads the exposition from its standard input only.
    let result = try await runCommand("/bin/sh", ["-c", #"exec "$0" check metrics < "$1""#, promtool, file])
    if result.status == 0 && result.output.isEmpty && result.errors.isEmpty { return "" }
    return "exit status \(result.status)\n\(result.output)\(result.errors)"
}
