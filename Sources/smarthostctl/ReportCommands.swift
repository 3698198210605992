import ArgumentParser
import CommandSupport
import Foundation
import NodeHTTP
import Reconciliation

/// `--format` of the report commands (`--json` is the same as `--format json`).
struct ReportFormatOption: ParsableArguments {
    @Option(help: "table (for people), json (for machines) or csv (for spreadsheets).")
    var format: String = "table"

    func validate() throws {
        guard ReportFormat(rawValue: format) != nil else { throw ValidationError("--format must be table, json or csv, got \(format)") }
    }

    func value(_ options: ClusterOptions) -> ReportFormat { options.json ? .json : ReportFormat(rawValue: format)! }
}

struct Reconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The orphan sweeps of every delivery node, merged: the last report, or a sweep now.",
        subcommands: [Report.self, Sweep.self])

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the last sweep report of every live delivery node.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var output: ReportFormatOption

        func run() async throws {
            try await Reconcile.collect(options, output.value(options), method: "GET", path: "/admin/reconcile/report")
        }
    }

    struct Sweep: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sweep every live delivery node now and print the merged report.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var output: ReportFormatOption

        func run() async throws {
            try await Reconcile.collect(options, output.value(options), method: "POST", path: "/admin/reconcile/sweep")
        }
    }

    /// Asks every live delivery node; one that does not answer is named in the report (and
    /// makes the command exit 1), never skipped silently.
    static func collect(_ options: ClusterOptions, _ format: ReportFormat, method: String, path: String) async throws {
        let cluster = try Cluster(options)
        let nodes = try await cluster.nodes(role: "delivery")
        let (reports, unanswered) = await cluster.ask(nodes, ReconcileReport.self, method: method, path: path, timeout: .seconds(600))
        let report = ReconcileReport(generatedAt: nowMilliseconds(), sweeps: reports.flatMap(\.sweeps),
                                     unanswered: unanswered)
        print(report.rendered(as: format), terminator: "")
        if !unanswered.isEmpty { throw ExitCode.failure }
    }
}

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Print the cluster ledger from the reconciler: accepted, delivered, bounced, expired, deleted, queued, unaccounted.")

    @OptionGroup var options: ClusterOptions
    @OptionGroup var output: ReportFormatOption
    @Flag(help: "Have the reconciler check the spools now instead of printing its last check.") var now = false

    func run() async throws {
        let cluster = try Cluster(options)
        let reconcilers = try await cluster.liveNodes().map(\.announcement).filter { $0.role == "reconciler" }
        guard let reconciler = reconcilers.first else {
            printError("no live reconciler in the registry (smarthost reconciler runs one)")
            throw ExitCode.failure
        }
        let path = (now ? "/admin/ledger/check" : "/admin/ledger") + "?format=\(output.value(options).rawValue)"
        let (status, body) = try await AdminClient.request(reconciler.admin, method: now ? "POST" : "GET", path: path,
                                                           token: cluster.configuration.node.adminToken, timeout: .seconds(600))
        guard status == 200 else {
            printError("\(reconciler.id) (\(reconciler.admin)) answered \(status): \(String(decoding: body, as: UTF8.self))")
            throw ExitCode.failure
        }
        print(String(decoding: body, as: UTF8.self), terminator: "")
    }
}
