import ArgumentParser
import CommandSupport
import Foundation
import Operations

struct Diagnose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Name which queue incident pattern holds, with its evidence and what to do; or say healthy.",
        discussion: "Patterns: \(IncidentPattern.allCases.map(\.rawValue).joined(separator: ", ")). Exit status 0 when healthy, 2 when a pattern holds, 1 when a node did not answer.")
    @OptionGroup var options: ClusterOptions
    @Option(name: .customLong("min-entries"), help: "The fewest waiting entries (or attempts) worth naming a pattern for.") var minimumEntries = 10

    func validate() throws {
        guard minimumEntries >= 1 else { throw ValidationError("--min-entries must be at least 1") }
    }

    func run() async throws {
        let cluster = try Cluster(options)
        let nodes = try await cluster.nodes(role: "delivery")
        var (summaries, unanswered) = await cluster.ask(nodes, NodeQueueSummary.self, path: "/admin/queue/summary")
        // A message spooled a moment ago is counted as orphaned until it is queued: an orphan
        // is one still there a second later.
        if summaries.contains(where: { $0.orphanedMessages > 0 }) {
            try await Task.sleep(for: .seconds(1))
            let (again, failed) = await cluster.ask(nodes, NodeQueueSummary.self, path: "/admin/queue/summary")
            unanswered.merge(failed) { first, _ in first }
            let later = Dictionary(again.map { ($0.node, $0.orphanedMessages) }, uniquingKeysWith: min)
            for index in summaries.indices {
                summaries[index].orphanedMessages = min(summaries[index].orphanedMessages, later[summaries[index].node] ?? 0)
            }
        }
        let diagnosis = Diagnosis(nodes: summaries, unanswered: unanswered,
                                  thresholds: Diagnosis.Thresholds(minimumEntries: minimumEntries), now: nowMilliseconds())
        if options.json { try printJSON(diagnosis) } else { print(diagnosis.text(), terminator: "") }
        if !unanswered.isEmpty { throw ExitCode.failure }
        if !diagnosis.healthy { throw ExitCode(2) }
    }
}
