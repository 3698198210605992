import Events
import Metrics
import QueueRecord
import Reconciliation
import Spool

/// What a queue view shows of a node: its queues' counts, and the messages its spool holds
/// that none of them has (orphans not yet swept; a message just spooled is counted here for
/// the moment before it is queued).
public struct QueueView: Codable, Sendable, Equatable {
    public var node: String
    public var scheduled: Int
    public var ready: Int
    public var inFlight: Int
    public var held: Int
    public var limbo: Int
    /// Distinct messages with an entry in a queue or set.
    public var queuedMessages: Int
    /// Unfinished messages in the spool.
    public var spooledMessages: Int
    /// Spooled messages with no entry anywhere.
    public var orphanedMessages: Int
}

extension QueueManager {
    /// How many spool rows the sweep reads at a time; the actor is free between pages.
    static let sweepPageSize = 2_000

    /// The node's queues and spool, counted now.
    public func view() async throws -> QueueView {
        let spooled = try await spool.pendingCount()
        let counts = queues.counts
        let queued = queues.queuedMessages
        Gauge(label: "smarthost_queue_orphaned_messages").record(max(0, spooled - queued))
        return QueueView(node: settings.nodeID, scheduled: counts.scheduled, ready: counts.ready, inFlight: counts.inFlight,
                         held: counts.held, limbo: counts.limbo, queuedMessages: queued, spooledMessages: spooled,
                         orphanedMessages: max(0, spooled - queued))
    }

    /// Compares the spool with the queues: retries every limbo entry, then puts back in its
    /// scheduled queue (due now) every entry of an unfinished message that has been in no
    /// queue or set for longer than `grace`, with an OrphanRequeued event. A sweep already
    /// running is joined, not doubled.
    public func sweep(trigger: String, grace: Duration) async -> SweepReport {
        if let running = sweepInProgress { return await running.value }
        let task = Task { await self.sweepNow(trigger: trigger, grace: grace) }
        sweepInProgress = task
        var report = await task.value
        sweepInProgress = nil
        sweepTotals.add(report)
        report.sinceStart = sweepTotals
        lastSweep = report
        return report
    }

    private func sweepNow(trigger: String, grace: Duration) async -> SweepReport {
        let started = clock()
        var report = SweepReport(node: settings.nodeID, trigger: trigger, startedAt: Int64(started))
        var published: [MessageEvent] = []
        // What a queue view would have said just before the repairs (also a metric).
        _ = try? await view()
        await retryLimbo(&report, &published)
        let cutoff = started - min(started, UInt64(grace.milliseconds))
        var cursor: Int64? = 0
        while let after = cursor {
            let page: SpoolPage
            do {
                page = try await spool.sweepPage(after: after, limit: Self.sweepPageSize)
            } catch {
                report.errors.append("reading the spool: \(error)")
                break
            }
            report.malformedRows += page.malformed
            report.spooledMessages += page.slots.count
            var candidates: [MessageID] = []
            for slot in page.slots {
                report.entriesChecked += slot.domains.count
                if slot.spooledAt <= cutoff,
                   slot.domains.contains(where: { queues.location(of: QueueEntry.Key(id: slot.id, domain: $0)) == nil }) {
                    candidates.append(slot.id)
                }
            }
            if !candidates.isEmpty { await requeueOrphans(candidates, cutoff: cutoff, &report, &published) }
            publishOffActor(&published)
            cursor = page.next
        }
        publishOffActor(&published)
        report.durationMilliseconds = Int64(clock() - started)
        Gauge(label: "smarthost_reconcile_sweep_seconds").record(Double(report.durationMilliseconds) / 1_000)
        Gauge(label: "smarthost_spool_messages").record(report.spooledMessages)
        if report.orphansFound + report.limboRetried > 0 || !report.errors.isEmpty {
            logger.warning("the sweep found orphans, limbo entries or errors", metadata: [
                "orphans": "\(report.orphansFound)", "repaired": "\(report.orphansRepaired)", "limbo": "\(report.limboRetried)",
                "limbo_repaired": "\(report.limboRepaired)", "errors": "\(report.errors)", "ms": "\(report.durationMilliseconds)",
            ])
        }
        return report
    }

    /// Encoding thousands of events would keep every connection waiting for the actor: they
    /// are published page by page, from outside it.
    private func publishOffActor(_ published: inout [MessageEvent]) {
        guard !published.isEmpty else { return }
        let batch = published
        published = []
        let events = events
        Task.detached { events.publish(batch) }
    }

    /// Candidates are read again from the spool (not from the page, which may be older than
    /// an outcome recorded since) and checked again against the queues, with no suspension
    /// point between that check and scheduling.
    private func requeueOrphans(_ candidates: [MessageID], cutoff: UInt64, _ report: inout SweepReport, _ published: inout [MessageEvent]) async {
        let fresh: [SpooledMessage]
        do {
            fresh = try await spool.pendingMessages(candidates)
        } catch {
            report.errors.append("reading \(candidates.count) candidates: \(error)")
            return
        }
        let now = clock()
        for message in fresh where message.spooledAt <= cutoff {
            for var entry in entries(of: message) where queues.location(of: entry.key) == nil {
                entry.dueAt = now
                queues.schedule(entry)
                note(entry, reason: "in no queue", repaired: true, error: nil, limbo: false, now: now, &report, &published)
            }
        }
        pump()
    }

    /// Limbo entries stay in limbo while their outcome is written again; they leave it only
    /// once the spool has it.
    private func retryLimbo(_ report: inout SweepReport, _ published: inout [MessageEvent]) async {
        for parked in queues.limboEntries {
            let entry = parked.entry
            var failure: String?
            let encoded = events.encode(parked.events)
            do {
                _ = try await spool.settle(entry.id, finalRecipients: parked.unrecordedFinals, attempts: entry.attempts, nextAttemptAt: entry.dueAt,
                                           events: events.outboxEvents(encoded))
                events.logLocally(encoded)
                queues.releaseLimbo(entry.key)
            } catch {
                failure = "\(error)"
            }
            note(entry, reason: "limbo: \(parked.reason)", repaired: failure == nil, error: failure, limbo: true, now: clock(),
                 &report, &published)
        }
    }

    private func note(_ entry: QueueEntry, reason: String, repaired: Bool, error: String?, limbo: Bool, now: UInt64,
                      _ report: inout SweepReport, _ published: inout [MessageEvent]) {
        report.add(OrphanRecord(node: settings.nodeID, id: entry.id.text, tenant: entry.tenant, domain: entry.domain,
                                queue: entry.queue.description, reason: reason,
                                ageSeconds: Int64(now - min(now, entry.receivedAt)) / 1_000, attempts: entry.attempts,
                                repaired: repaired, error: error), limbo: limbo)
        Counter(label: "smarthost_reconcile_orphans_total", dimensions: [("kind", limbo ? "limbo" : "in-no-queue")]).increment()
        guard repaired else { return }
        var event = MessageEvent(type: .orphanRequeued, id: entry.id.text, tenant: entry.tenant, time: Int64(now), node: settings.nodeID,
                                 sender: entry.sender?.description ?? "", size: entry.size, job: entry.job)
        event.queue = entry.queue.description
        event.reason = reason
        event.attempt = entry.attempts
        event.receivedAt = Int64(entry.receivedAt)
        published.append(event)
    }

    /// Test-only (`testing.fault_injection`): loses track of up to `count` scheduled entries,
    /// as the bug the sweep exists for would. Returns their message ids.
    public func dropScheduledSilently(_ count: Int) -> [String] {
        guard faults != nil else { return [] }
        return queues.dropScheduledSilently(count).map(\.id.text)
    }
}
