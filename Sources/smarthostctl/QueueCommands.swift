import ArgumentParser
import CommandSupport
import Foundation
import Operations
import Reconciliation
import Redis
import Throttle

struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The queues of every delivery node: summary, list, pause, resume, retry, delete.",
        subcommands: [Summary.self, List.self, Pause.self, Resume.self, Retry.self, Delete.self])
}

/// `--tenant --domain --job --pool --age-min --state`: which queued entries.
struct FilterOptions: ParsableArguments {
    @Option(help: "Only this tenant's entries.") var tenant: String?
    @Option(help: "Only entries to this destination domain.") var domain: String?
    @Option(help: "Only this job (campaign).") var job: String?
    @Option(help: "Only entries of this egress pool.") var pool: String?
    @Option(name: .customLong("age-min"), help: "Only entries received at least this long ago, such as 2h.") var ageMin: String?
    @Option(help: "Only entries in this state: \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")).") var state: String?

    func filter() throws -> QueueFilter {
        let age = try ageMin.map { Int(try parseDuration($0, option: "--age-min").components.seconds) }
        var parsedState: QueueState?
        if let state {
            guard let value = QueueState(rawValue: state) else {
                throw ValidationError("--state must be one of \(QueueState.allCases.map(\.rawValue).joined(separator: ", ")), got \(state)")
            }
            parsedState = value
        }
        let filter = QueueFilter(tenant: tenant, domain: domain, job: job, pool: pool, ageMinSeconds: age, state: parsedState)
        do {
            try filter.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return filter
    }
}

extension Queue {
    struct Summary: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queued entries per tenant, destination, pool or node: ready, in flight, deferred, suspended, held, limbo, oldest, last response.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var filters: FilterOptions
        @Option(help: "Group by these columns, comma-separated: tenant, domain, pool, node.") var by = "tenant,domain"
        @Option(help: "Order: queued, oldest, deferred, in-flight or suspended.") var sort = "queued"
        @Option(help: "At most this many rows.") var limit: Int?

        func validate() throws {
            _ = try dimensions()
            guard SummarySort(rawValue: sort) != nil else {
                throw ValidationError("--sort must be one of \(SummarySort.allCases.map(\.rawValue).joined(separator: ", ")), got \(sort)")
            }
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        }

        func dimensions() throws -> [SummaryDimension] {
            let names = by.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let parsed = names.compactMap(SummaryDimension.init(rawValue:))
            guard !names.isEmpty, parsed.count == names.count, Swift.Set(parsed).count == parsed.count else {
                throw ValidationError("--by takes distinct columns of tenant, domain, pool, node, comma-separated; got \(by)")
            }
            return parsed
        }

        func run() async throws {
            let cluster = try Cluster(options)
            let filter = try filters.filter()
            let nodes = try await cluster.nodes(role: "delivery")
            let (answers, unanswered) = await cluster.ask(nodes, NodeQueueSummary.self, path: "/admin/queue/summary" + queryString(filter.query))
            let summary = ClusterQueueSummary(nodes: answers, unanswered: unanswered, by: try dimensions(), sort: SummarySort(rawValue: sort)!,
                                              limit: limit, now: nowMilliseconds())
            if options.json { try printJSON(summary) } else { print(summary.table(width: terminalWidth()), terminator: "") }
            if !unanswered.isEmpty { throw ExitCode.failure }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The oldest matching queued entries of every delivery node, one per line.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var filters: FilterOptions
        @Option(help: "At most this many entries (1 to 100000).") var limit = 100

        func validate() throws {
            guard (1...QueueActionRequest.maximumLimit).contains(limit) else { throw ValidationError("--limit must be from 1 to 100000, got \(limit)") }
        }

        struct Listed: Encodable {
            var matched: Int
            var entries: [ListedEntry]
            var unanswered: [String: String]
        }

        func run() async throws {
            let cluster = try Cluster(options)
            var query = try filters.filter().query
            query["limit"] = String(limit)
            let nodes = try await cluster.nodes(role: "delivery")
            let (answers, unanswered) = await cluster.ask(nodes, NodeQueueListing.self, path: "/admin/queue/messages" + queryString(query))
            let entries = answers.flatMap(\.entries).sorted { ($0.receivedAt, $0.id, $0.domain) < ($1.receivedAt, $1.id, $1.domain) }.prefix(limit)
            let matched = answers.reduce(0) { $0 + $1.matched }
            if options.json {
                try printJSON(Listed(matched: matched, entries: Array(entries), unanswered: unanswered))
            } else {
                print(Array(entries).table(width: terminalWidth(), now: nowMilliseconds()), terminator: "")
                print("\(entries.count) of \(matched) matching entries listed")
            }
            try failIfUnanswered(unanswered)
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop delivery of a tenant's, domain's or pool's mail on every delivery node (within a second); it waits, unattempted.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var scope: ScopeOptions
        @Option(name: .customLong("for"), help: "Resume by itself after this long, such as 2h (default: until resumed, at most 30d).")
        var duration: String?
        @Option(help: "Why, for the operators who see it.") var reason = "paused by an operator"

        func run() async throws {
            let cluster = try Cluster(options)
            let lasting = try duration.map { try parseDuration($0, option: "--for") } ?? .seconds(30 * 86_400)
            let adjustment = Adjustment(action: .suspend, scope: scope.scope, reason: reason, setBy: "operator")
            if let problem = adjustment.problem { throw ValidationError("\(problem): give --tenant, --domain or --pool") }
            try await cluster.withRedis { redis throws(RedisError) in
                try await SharedAdjustments(redis: redis, keyPrefix: cluster.configuration.redis.keyPrefix).set(adjustment, for: lasting)
            }
            if options.json {
                return try printJSON(ListedAdjustment(id: adjustment.id, adjustment: adjustment, expiresInSeconds: lasting.components.seconds))
            }
            print("paused: \(adjustment.scope) until \(duration.map { "resumed or \($0) from now" } ?? "resumed (at most 30d)") (id: \(adjustment.id))")
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a pause (the same --tenant, --domain, --pool as it was given).")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var scope: ScopeOptions

        func run() async throws {
            let adjustment = Adjustment(action: .suspend, scope: scope.scope, reason: "", setBy: "operator")
            if let problem = adjustment.problem { throw ValidationError("\(problem): give --tenant, --domain or --pool") }
            try await removeAdjustment(try Cluster(options), id: adjustment.id, json: options.json)
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make matching scheduled, deferred and held entries due now and end their destinations' connection backoff.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var filters: FilterOptions
        @Flag(name: .customLong("dry-run"), help: "Count what would be retried, change nothing.") var dryRun = false

        func run() async throws {
            let cluster = try Cluster(options)
            let action = BatchAction(cluster: cluster, path: "/admin/queue/retry", request: QueueActionRequest(filter: try filters.filter()),
                                     verb: "retried", json: options.json)
            try await action.run(dryRun: dryRun, confirm: nil)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete matching entries for good: --bounce (AdminBounce events and a DSN to the sender) or --silent (AdminDelete events, nothing sent).",
            discussion: "Always counts first; --dry-run stops there. Without --yes it asks before deleting.")
        @OptionGroup var options: ClusterOptions
        @OptionGroup var filters: FilterOptions
        @Flag(help: "Each recipient gets an AdminBounce event and the sender a DSN.") var bounce = false
        @Flag(help: "Each recipient gets an AdminDelete event; nothing is sent.") var silent = false
        @Flag(name: .customLong("dry-run"), help: "Count what would be deleted, change nothing.") var dryRun = false
        @Flag(help: "Do not ask for confirmation.") var yes = false

        func validate() throws {
            guard bounce != silent else { throw ValidationError("give exactly one of --bounce and --silent") }
        }

        func run() async throws {
            let cluster = try Cluster(options)
            let mode: QueueActionRequest.Mode = bounce ? .bounce : .silent
            let action = BatchAction(cluster: cluster, path: "/admin/queue/delete",
                                     request: QueueActionRequest(filter: try filters.filter(), mode: mode), verb: "deleted (\(mode.rawValue))",
                                     json: options.json)
            try await action.run(dryRun: dryRun, confirm: yes ? nil : "Delete them with \(mode == .bounce ? "a DSN to each sender" : "nothing sent")? Type yes: ")
        }
    }
}

/// A retry or delete over every delivery node: counted first, then carried out in batches
/// (a progress bar on a terminal), each node until it has nothing left that matched.
struct BatchAction {
    let cluster: Cluster
    let path: String
    let request: QueueActionRequest
    let verb: String
    let json: Bool
    static let batch = 1_000

    struct Outcome: Encodable {
        var dryRun: Bool
        var matched: Int
        var affected: Int
        var recipients: Int
        var failed: Int
        var skipped: [String: Int]
        var nodes: [QueueActionResult]
        var unanswered: [String: String]
    }

    func run(dryRun: Bool, confirm prompt: String?) async throws {
        let nodes = try await cluster.nodes(role: "delivery")
        var counting = request
        counting.dryRun = true
        let (counts, unanswered) = await cluster.ask(nodes, QueueActionResult.self, method: "POST", path: path, body: encode(counting))
        let matched = counts.reduce(0) { $0 + $1.matched }
        let skipped = counts.reduce(into: [String: Int]()) { total, result in total.merge(result.skipped, uniquingKeysWith: +) }
        let takeable = matched - skipped.values.reduce(0, +)
        let counted = counts.map { "\($0.node): \($0.matched) matching\($0.skipped.isEmpty ? "" : ", left alone " + describe($0.skipped))" }
        if !json || dryRun {
            printError("\(takeable) entries to be \(verb) on \(counts.count) nodes (\(counted.joined(separator: "; ")))")
        }
        guard !dryRun, takeable > 0, unanswered.isEmpty else {
            if json { try printJSON(Outcome(dryRun: true, matched: matched, affected: 0, recipients: 0, failed: 0, skipped: skipped, nodes: counts, unanswered: unanswered)) }
            try failIfUnanswered(unanswered)
            return
        }
        if let prompt {
            FileHandle.standardError.write(Data(prompt.utf8))
            guard readLine()?.trimmingCharacters(in: .whitespaces).lowercased() == "yes" else {
                printError("not confirmed: nothing changed (--yes skips the question)")
                throw ExitCode.failure
            }
        }
        let bar = ProgressBar(total: takeable)
        let onTerminal = isatty(STDERR_FILENO) == 1
        var remaining = Dictionary(uniqueKeysWithValues: counts.map { ($0.node, $0.matched - $0.skipped.values.reduce(0, +)) })
        var totals: [String: QueueActionResult] = [:]
        var failures: [String: String] = [:]
        var done = 0
        while true {
            let pending = nodes.filter { (remaining[$0.id] ?? 0) > 0 && failures[$0.id] == nil }
            guard !pending.isEmpty else { break }
            var step = request
            step.limit = Self.batch
            let (results, failed) = await cluster.ask(pending, QueueActionResult.self, method: "POST", path: path, body: encode(step))
            failures.merge(failed) { first, _ in first }
            for result in results {
                var total = totals[result.node] ?? QueueActionResult(node: result.node, matched: result.matched, affected: 0, recipients: 0,
                                                                     skipped: result.skipped, failed: 0)
                total.affected += result.affected
                total.recipients += result.recipients
                total.failed += result.failed
                totals[result.node] = total
                done += result.affected + result.failed
                // Nothing taken this time: what is left is in flight or gone already.
                remaining[result.node] = result.affected + result.failed == 0 ? 0 : (remaining[result.node] ?? 0) - result.affected - result.failed
            }
            if onTerminal { FileHandle.standardError.write(Data(("\r" + bar.line(done: done, label: "entries \(verb)")).utf8)) }
        }
        if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        let results = totals.values.sorted { $0.node < $1.node }
        let outcome = Outcome(dryRun: false, matched: matched, affected: results.reduce(0) { $0 + $1.affected },
                              recipients: results.reduce(0) { $0 + $1.recipients }, failed: results.reduce(0) { $0 + $1.failed },
                              skipped: skipped, nodes: results, unanswered: failures)
        if json {
            try printJSON(outcome)
        } else {
            print(ReportFormat.table(["NODE", "MATCHED", verb.uppercased(), "RECIPIENTS", "FAILED (LIMBO)", "LEFT ALONE"], results.map {
                [$0.node, "\($0.matched)", "\($0.affected)", "\($0.recipients)", "\($0.failed)", describe($0.skipped)]
            }), terminator: "")
            print("\(outcome.affected) entries \(verb), \(outcome.recipients) recipients")
        }
        try failIfUnanswered(failures)
        if outcome.failed > 0 { throw ExitCode.failure }
    }

    private func encode(_ request: QueueActionRequest) -> [UInt8] {
        Array(ReportFormat.json(request).utf8)
    }

    private func describe(_ skipped: [String: Int]) -> String {
        skipped.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }
}

func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

func terminalWidth() -> Int {
    var size = winsize()
    if isatty(STDOUT_FILENO) == 1, ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
    return TerminalTable.width(environment: ProcessInfo.processInfo.environment)
}
