import Events
import Foundation
import Operations
import Testing
import TestSupport

/// Cluster-wide limits through a real redis-server, held by three real delivery nodes and
/// measured where they matter: at the destination (a real SMTP server that records when each
/// connection opens and closes and when each message arrives).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct ClusterLimitTests {
    /// Three delivery nodes on one broker, one Redis and one destination (`inbox.test`).
    struct Cluster {
        let shared: DeliveryCluster
        var broker: TansuBroker { shared.broker }
        var redis: RedisServer { shared.redis }
        var destination: ScriptedSMTPServer { shared.servers[0] }
        var nodes: [DeliveryProcess] { shared.nodes }

        static func start(destinationScript: String = #"{"rules": []}"#, yaml: (Int) -> String) async throws -> Cluster {
            Cluster(shared: try await DeliveryCluster.start(scripts: [destinationScript], nodes: (1...3).map { "delivery-limits-\($0)" }) {
                yaml($0[0].port)
            })
        }

        func stop() { shared.stop() }

        func delivered() -> Int {
            nodes.map { Int($0.metric("smarthost_delivery_recipients_total", labels: #"outcome="delivered""#) ?? 0) }.reduce(0, +)
        }

        func logs() -> String { nodes.map { "--- \($0.process.name)\n\($0.process.logTail(lines: 15))" }.joined(separator: "\n") }

        func ctl(_ arguments: [String]) async throws -> CommandResult { try await shared.ctl(arguments) }
    }

    /// What the destination saw.
    struct Timeline {
        let records: [ScriptedSMTPServer.Record]

        var messageTimes: [Double] { records.filter { $0.event == "message" }.compactMap(\.time).sorted() }

        /// The most connections open at once between `from` and `to` (an open connection counts
        /// from its connect record to its close record).
        func maxConcurrent(from: Double = 0, to: Double = .infinity) -> Int {
            var open = 0, most = 0
            for record in records.sorted(by: { ($0.time ?? 0) < ($1.time ?? 0) }) {
                if record.event == "connect" { open += 1 }
                if record.event == "close" { open -= 1 }
                if let time = record.time, time >= from, time <= to { most = max(most, open) }
            }
            return most
        }

        /// The most messages in any `window` seconds among `times` (every window starting at a message).
        static func maxInWindow(_ window: Double, _ times: [Double]) -> Int {
            var most = 0, end = 0
            for start in times.indices {
                while end < times.count, times[end] < times[start] + window { end += 1 }
                most = max(most, end - start)
            }
            return most
        }
    }

    static func limitsYAML(rate: String, burst: Int) -> String {
        "limits:\n  - {domain: inbox.test, max_connections: 5, max_message_rate: \(rate), message_rate_burst: \(burst)}\n"
    }

    static func nodeYAML(_ port: Int, limits: String) -> String {
        inboxTestYAML(destination: port, delivery: "command_timeout: 30s, max_messages_per_connection: 1000", more: limits)
    }

    /// 5,000 messages, 3 nodes, `inbox.test` limited to 5 connections and 600 messages a minute
    /// with a GCRA burst of 10: at the destination, never more than 5 connections at once and
    /// no 60-second window above 610 messages. Redis is then killed: delivery goes on under
    /// the local limits (each node 1/3 of them), and when Redis is back the shared ones resume
    /// without a restart. A reload (SIGHUP) then raises the rate, the backlog drains, and every
    /// message arrived exactly once.
    @Test func threeNodesHoldTheClusterLimitsAtTheDestinationWithAndWithoutRedis() async throws {
        let cluster = try await Cluster.start { Self.nodeYAML($0, limits: Self.limitsYAML(rate: "600/min", burst: 10)) }
        defer { cluster.stop() }
        let total = 5_000
        for start in stride(from: 0, to: total, by: 1_000) {
            try await enqueue((start..<start + 1_000).map { testMessage(to: ["user\($0)@inbox.test"], trafficClass: "fast") },
                              broker: cluster.broker)
        }
        let flowing = try await eventually(.seconds(60)) { cluster.delivered() > 0 }
        #expect(flowing, "delivery started; logs:\n\(cluster.logs())")
        try await Task.sleep(for: .seconds(70))

        // Redis dies mid-run.
        let crashedAt = Date().timeIntervalSince1970
        cluster.redis.crash()
        let deliveredAtCrash = cluster.delivered()
        try await Task.sleep(for: .seconds(30))
        let deliveredInFallback = cluster.delivered() - deliveredAtCrash
        let nodesWentLocal = cluster.nodes.allSatisfy { $0.metric("smarthost_throttle_redis_up") == 0 }
        #expect(nodesWentLocal, "every node reports Redis down")
        #expect(deliveredInFallback > 0, "delivery went on while Redis was down")

        // Redis comes back: the shared limits take over again by themselves.
        let restartedAt = Date().timeIntervalSince1970
        try await cluster.redis.restart()
        let backUp = try await eventually(.seconds(10)) {
            cluster.nodes.allSatisfy { $0.metric("smarthost_throttle_redis_up") == 1 }
        }
        #expect(backUp, "every node uses Redis again; logs:\n\(cluster.logs())")
        try await Task.sleep(for: .seconds(20))
        let listed = try await cluster.ctl(["nodes"])
        #expect(listed.status == 0 && listed.output.contains("3 live nodes"), "\(listed.output)\(listed.errors)")
        let reloadedAt = Date().timeIntervalSince1970

        // A reload raises the rate; the backlog drains; Redis round trips per message measured there.
        let commandsBefore = try await redisCommands(cluster.redis)
        let deliveredBefore = cluster.delivered()
        for node in cluster.nodes {
            try node.rewrite(yaml: Self.nodeYAML(cluster.destination.port, limits: Self.limitsYAML(rate: "60000/min", burst: 1000)))
            node.process.signal(SIGHUP)
        }
        let drained = try await eventually(.seconds(120), every: .milliseconds(500)) { cluster.delivered() >= total }
        #expect(drained, "delivered \(cluster.delivered()) of \(total); logs:\n\(cluster.logs())")
        let perMessage = Double(try await redisCommands(cluster.redis) - commandsBefore) / Double(max(1, cluster.delivered() - deliveredBefore))
        print("cluster limits: Redis commands per delivered message after the reload: \(String(format: "%.3f", perMessage))")
        #expect(perMessage <= 0.25, "at most 0.25 Redis commands per message at a high rate")

        let timeline = Timeline(records: try cluster.destination.records())
        let times = timeline.messageTimes
        let shared = times.filter { $0 < crashedAt }
        let limited = times.filter { $0 < reloadedAt }
        let fallback = times.filter { $0 >= crashedAt && $0 < restartedAt }
        print("""
            cluster limits: \(shared.count) messages under shared limits, max \(Timeline.maxInWindow(60, shared)) in 60 s; \
            \(fallback.count) in \(Int(restartedAt - crashedAt)) s with Redis down; max \(Timeline.maxInWindow(60, limited)) in any 60 s \
            before the reload; max \(timeline.maxConcurrent()) connections at once (shared \(timeline.maxConcurrent(to: crashedAt)), \
            Redis down \(timeline.maxConcurrent(from: crashedAt, to: restartedAt)), back \(timeline.maxConcurrent(from: restartedAt, to: reloadedAt)), \
            reloaded \(timeline.maxConcurrent(from: reloadedAt)))
            """)
        #expect(timeline.maxConcurrent() <= 5, "never more than 5 connections at once, cluster-wide")
        #expect(timeline.maxConcurrent(to: crashedAt) == 5, "the connection limit, not something else, bounded the connections")
        // GCRA: at most rate × window + burst (10) while the limits are shared.
        #expect(Timeline.maxInWindow(60, shared) <= 610)
        #expect(Timeline.maxInWindow(60, shared) >= 500, "the rate limit, not something else, bounded the rate")
        // Windows that reach into the fallback add at most the local bursts: 3 nodes × ⌈10/3⌉... ⌊10/3⌋ = 3 each.
        #expect(Timeline.maxInWindow(60, limited) <= 610 + 9)
        #expect(Timeline.maxInWindow(60, fallback) <= 600 + 9)

        let recipients = try cluster.destination.messages().flatMap { $0.recipients ?? [] }
        #expect(recipients.count == total && Set(recipients).count == total, "every message arrived exactly once")
    }

    /// A destination that answers 421 4.7.28 ("rate limited") after 150 messages: the shaping
    /// rule lowers the rate cluster-wide to 1/s for 15 s, all three nodes slow down within a
    /// second, and the rate returns when it expires. Then an operator suspends the destination
    /// for a few seconds: nothing is sent, no attempt is counted, and delivery resumes.
    @Test func aRateLimitReplySlowsEveryNodeAndExpires() async throws {
        let script = """
            {"rules": [{"when": "data_end", "after_messages": 150, "times": 3,
                        "reply": "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail. To protect our users, mail from your IP has been temporarily rate limited."}]}
            """
        let limits = """
            limits:
              - {domain: inbox.test, max_connections: 6, max_message_rate: 1200/min, message_rate_burst: 20}
            response_rules:
              - {name: google-throttled, enhanced: 4.7.28, action: retry_later, delay: 1s}
            shaping:
              - {name: google-slow-down, enhanced: 4.7.28, action: message_rate, message_rate: 60/min, duration: 15s}
            """
        let cluster = try await Cluster.start(destinationScript: script) { Self.nodeYAML($0, limits: limits) }
        defer { cluster.stop() }
        let total = 1_000
        try await enqueue((0..<total).map { testMessage(to: ["user\($0)@inbox.test"], trafficClass: "fast") }, broker: cluster.broker)

        let records = { try cluster.destination.records() }
        let triggered = try await eventually(.seconds(90)) { try records().contains { $0.event == "reply" && $0.reply?.contains("4.7.28") == true } }
        #expect(triggered, "the destination answered 421 4.7.28; logs:\n\(cluster.logs())")
        let listed = try await cluster.ctl(["throttle", "show", "--json"])
        #expect(listed.status == 0 && listed.output.contains("rule:google-slow-down") && listed.output.contains("message_rate"),
                "\(listed.output)\(listed.errors)")

        // An entry no node can apply (written into Redis by hand, say): every node ignores and
        // reports it, none takes it for a Redis outage, the rule still holds (measured below),
        // and throttle show names it (exit 1) until it is removed.
        let expiry = Int64(Date().timeIntervalSince1970 * 1_000) + 600_000
        for command in [["HSET", "smarthost:adjustments", "hand-written", #"{"action": "slow"}"#],
                        ["ZADD", "smarthost:adjustments:expiry", "\(expiry)", "hand-written"], ["INCR", "smarthost:adjustments:version"]] {
            _ = try await cluster.redis.cli(command)
        }
        let reported = try await eventually(.seconds(5)) {
            cluster.nodes.allSatisfy { $0.metric("smarthost_throttle_adjustments_unreadable") == 1 }
        }
        #expect(reported, "every node reports the unreadable entry; logs:\n\(cluster.logs())")
        #expect(cluster.nodes.allSatisfy { $0.metric("smarthost_throttle_redis_up") == 1 }, "an unreadable entry is not an outage")
        let shown = try await cluster.ctl(["throttle", "show"])
        #expect(shown.status == 1 && shown.output.contains("rule:google-slow-down")
                    && shown.errors.contains("UNREADABLE ADJUSTMENT (every node ignores it): hand-written: not an adjustment"),
                "\(shown.status) \(shown.output)\(shown.errors)")
        let removed = try await cluster.ctl(["throttle", "remove", "hand-written"])
        #expect(removed.status == 0, "\(removed.output)\(removed.errors)")
        #expect(try await cluster.ctl(["throttle", "show"]).status == 0)
        // The same for a registry entry another version might write: listed apart, not a node.
        for command in [["ZADD", "smarthost:nodes", "\(expiry - 597_000)", "newer"], ["HSET", "smarthost:nodes:info", "newer", "{}"]] {
            _ = try await cluster.redis.cli(command)
        }
        let nodes = try await cluster.ctl(["nodes"])
        #expect(nodes.status == 1 && nodes.output.contains("3 live nodes")
                    && nodes.errors.contains("UNREADABLE REGISTRY ENTRY (not counted as a node): newer: not a node announcement: {}"),
                "\(nodes.status) \(nodes.output)\(nodes.errors)")

        // Past the rule (15 s) and back at full rate for a while.
        try await Task.sleep(for: .seconds(22))
        let suspendedAt = Date().timeIntervalSince1970
        let suspend = try await cluster.ctl(["throttle", "set", "--action", "suspend", "--domain", "inbox.test", "--for", "6s",
                                                    "--reason", "test"])
        #expect(suspend.status == 0, "\(suspend.output)\(suspend.errors)")
        let drained = try await eventually(.seconds(120), every: .milliseconds(500)) { cluster.delivered() >= total }
        #expect(drained, "delivered \(cluster.delivered()) of \(total); logs:\n\(cluster.logs())")

        let all = try records()
        let t0 = try #require(all.first { $0.event == "reply" && $0.reply?.contains("4.7.28") == true }?.time)
        let messages = all.filter { $0.event == "message" }
        func count(_ from: Double, _ to: Double, node: String? = nil) -> Int {
            messages.filter { ($0.time ?? 0) >= from && ($0.time ?? 0) < to && (node == nil || $0.helo == node) }.count
        }
        let before = count(t0 - 5, t0)
        let slowed = count(t0 + 1, t0 + 14)
        let after = count(t0 + 17, t0 + 21)
        print("shaping: \(before) messages in the 5 s before the 421, \(slowed) in the 13 s from 1 s after it, \(after) in 4 s after the rule expired")
        #expect(before >= 50, "about 20 a second before the rule")
        // 1/s for 13 s, plus the burst of 1 and one token per node held when it started.
        #expect(slowed <= 13 + 1 + 3, "every node slowed down within a second")
        for node in cluster.nodes {
            #expect(count(t0 - 10, t0, node: node.process.name) > 0, "\(node.process.name) was sending before the rule")
        }
        #expect(after >= 40, "the rate returned when the rule expired")
        #expect(count(suspendedAt + 1, suspendedAt + 6) == 0, "nothing sent while the operator's suspension held")
        #expect(count(suspendedAt + 6, suspendedAt + 20) > 0, "delivery resumed after it")

        let recipients = messages.flatMap { $0.recipients ?? [] }
        #expect(Set(recipients).count == total && recipients.count == total, "every message arrived once: \(recipients.count) arrivals, \(Set(recipients).count) distinct")
        let failures = try cluster.nodes.flatMap { try $0.events() }.filter { $0.type == .transientFailure }
        #expect(failures.count == 3, "only the three 421 replies were attempts that failed; a suspension is not an attempt")
    }

    /// A daily quota (PowerMTA's max-msg-per-day) counted across three nodes: exactly that
    /// many reach the destination; the rest wait in their scheduled queues, unattempted, until
    /// the quota allows (the next UTC day). A reload raising the quota and `queue retry` (the
    /// runbook's intervention) release them, each once.
    @Test func aDailyQuotaHoldsAcrossNodesAndTheRestWaitUnattempted() async throws {
        let dayAtStart = Int(Date().timeIntervalSince1970) / 86_400
        let quota = { (count: Int) in "limits:\n  - {domain: inbox.test, max_messages_per_day: \(count)}\n" }
        let cluster = try await Cluster.start { Self.nodeYAML($0, limits: quota(25)) }
        defer { cluster.stop() }
        let total = 60
        try await enqueue((0..<total).map { testMessage(to: ["daily\($0)@inbox.test"]) }, broker: cluster.broker)
        func summary() async throws -> QueueSummaryRow { try await cluster.shared.summary().total }
        let capped = try await eventuallyAsync(.seconds(60)) { try await summary().scheduled == total - 25 }
        #expect(capped, "35 entries back in their scheduled queues; delivered \(cluster.delivered()); logs:\n\(cluster.logs())")
        try await Task.sleep(for: .seconds(3))
        #expect(try cluster.destination.messages().count == 25, "exactly the day's quota reached the destination")
        let waiting = try await summary()
        #expect(waiting.queued == total - 25 && waiting.deferred == 0, "\(waiting)")
        let attempts = try cluster.nodes.flatMap { try $0.events() }.filter { $0.type == .transientFailure }
        #expect(attempts.isEmpty, "waiting for a quota is not an attempt: \(attempts.count) TransientFailure events")

        for node in cluster.nodes {
            try node.rewrite(yaml: Self.nodeYAML(cluster.destination.port, limits: quota(1_000)))
            node.process.signal(SIGHUP)
        }
        let reloaded = try await eventually(.seconds(10)) {
            cluster.nodes.allSatisfy { $0.process.logTail(lines: 200).contains("limits and traffic shaping rules reloaded") }
        }
        try #require(reloaded, "every node reloaded; logs:\n\(cluster.logs())")
        let retried = try await cluster.ctl(["queue", "retry", "--domain", "inbox.test", "--json"])
        #expect(retried.status == 0 && retried.output.contains("\"affected\" : \(total - 25)"), "\(retried.output)\(retried.errors)")
        let drained = try await eventually(.seconds(60)) { cluster.delivered() >= total }
        #expect(drained, "delivered \(cluster.delivered()) of \(total); logs:\n\(cluster.logs())")
        let recipients = try cluster.destination.messages().flatMap { $0.recipients ?? [] }
        #expect(recipients.count == total && Set(recipients).count == total, "every message arrived once")
        if Int(Date().timeIntervalSince1970) / 86_400 != dayAtStart {
            Issue.record("the UTC day turned during the test, so the quota's count restarted; run it again")
        }
    }

    /// Commands the nodes sent (a script counts once), from INFO commandstats.
    func redisCommands(_ redis: RedisServer) async throws -> Int {
        try await redis.clientCommands()
    }
}
