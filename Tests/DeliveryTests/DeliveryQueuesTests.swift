import Delivery
import QueueRecord
import SMTPProtocol
import SmarthostConfig
import Testing

func entry(_ number: Int, domain: String = "example.com", tenant: String = "acme", job: String? = nil,
           lane: AcceptedMessage.Lane = .normal, dueAt: UInt64 = 0, pool: String = "default") -> QueueEntry {
    let id = MessageID.generate(milliseconds: 1_800_000_000_000 + UInt64(number))
    return QueueEntry(id: id, tenant: tenant, job: job, domain: domain, sender: Mailbox(localPart: "app", domain: "acme.test"),
                      recipients: [Mailbox(localPart: "user\(number)", domain: domain)], pool: pool, lane: lane,
                      trafficClass: "bulk", size: 100, eightBit: false, smtputf8: false, receivedAt: 0, attempts: 0, dueAt: dueAt)
}

let sink = Site(NextHop(host: "127.0.0.1", port: 2526))
let everythingToSink: @Sendable (String) -> RouteDecision = { _ in .deliver(sink) }

@Suite struct DeliveryQueuesTests {
    @Test func entriesMoveFromScheduledToReadyWhenDueAndBounded() {
        var queues = DeliveryQueues(readyQueueSize: 3)
        for number in 0..<5 { queues.schedule(entry(number, dueAt: 100)) }
        queues.schedule(entry(9, dueAt: 500))
        #expect(queues.promote(now: 50, route: everythingToSink).moved == 0)
        #expect(queues.promote(now: 100, route: everythingToSink).moved == 3)
        #expect(queues.counts.ready == 3 && queues.counts.scheduled == 3)
        let site = SiteKey(pool: "default", site: sink)
        #expect(queues.take(from: site) != nil)
        #expect(queues.promote(now: 100, route: everythingToSink).moved == 1)
        #expect(queues.counts.ready == 3 && queues.counts.inFlight == 1 && queues.counts.scheduled == 2)
        #expect(queues.counts.total == 6)
    }

    @Test func dueOrderWithinAScheduledQueue() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        let late = entry(1, dueAt: 300), early = entry(2, dueAt: 100), middle = entry(3, dueAt: 200)
        for item in [late, early, middle] { queues.schedule(item) }
        queues.promote(now: 1_000, route: everythingToSink)
        let site = SiteKey(pool: "default", site: sink)
        #expect([queues.take(from: site), queues.take(from: site), queues.take(from: site)].map { $0?.id } == [early.id, middle.id, late.id])
    }

    @Test func higherLanesLeaveTheReadyQueueFirst() {
        var queues = DeliveryQueues(readyQueueSize: 100)
        for number in 0..<20 { queues.schedule(entry(number, lane: .low)) }
        queues.schedule(entry(50, lane: .normal))
        queues.schedule(entry(60, lane: .high))
        queues.promote(now: 0, route: everythingToSink)
        let site = SiteKey(pool: "default", site: sink)
        #expect(queues.take(from: site)?.lane == .high)
        #expect(queues.take(from: site)?.lane == .normal)
        #expect(queues.take(from: site)?.lane == .low)
    }

    @Test func aDueTransactionalEntryIsNotBehindTheDueBulkOfItsQueue() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        for number in 0..<1_000 { queues.schedule(entry(number, lane: .low, dueAt: 0)) }
        let reset = entry(5_000, lane: .high, dueAt: 50)
        queues.schedule(reset)
        queues.promote(now: 100, route: everythingToSink)
        // The bulk lane of the ready queue is full (10); the high lane has its own room.
        #expect(queues.counts.ready == 11)
        #expect(queues.take(from: SiteKey(pool: "default", site: sink))?.id == reset.id)
    }

    @Test func suspendedSitesKeepTheirEntriesScheduledAndReturnedOnesAreUnattempted() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        for number in 0..<3 { queues.schedule(entry(number)) }
        let site = SiteKey(pool: "default", site: sink)
        queues.promote(now: 0, route: everythingToSink, accepts: { $1 != site })
        #expect(queues.counts.scheduled == 3 && queues.counts.ready == 0)
        queues.promote(now: 0, route: everythingToSink)
        #expect(queues.counts.ready == 3)
        #expect(queues.returnToScheduled(from: site, dueAt: 900) == 3)
        #expect(queues.counts.scheduled == 3 && queues.counts.ready == 0 && queues.counts.inFlight == 0)
        var due: [UInt64] = []
        queues.forEachEntry { entry, _ in due.append(entry.dueAt) }
        #expect(due == [900, 900, 900])
        #expect(queues.promote(now: 899, route: everythingToSink).moved == 0)
    }

    @Test func entriesWhoseRouteFailedAreReturnedInFlight() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        queues.schedule(entry(1, domain: "nxdomain.test"))
        queues.schedule(entry(2, domain: "nxdomain.test", dueAt: 500))
        let reply = SMTPReply(550, EnhancedStatusCode(5, 1, 2), "nxdomain.test does not exist")
        let promotion = queues.promote(now: 0) { _ in .fail(reply) }
        #expect(promotion.failed.map(\.reply) == [reply] && promotion.moved == 1)
        #expect(queues.counts.inFlight == 1 && queues.counts.scheduled == 1)
        #expect(queues.promote(now: 0) { _ in .wait }.moved == 0)
    }

    @Test func emptyQueuesAreReapedAndRecreatedWithoutLosingEntries() {
        var queues = DeliveryQueues(readyQueueSize: 100)
        for domain in ["a.test", "b.test", "c.test"] { queues.schedule(entry(1, domain: domain)) }
        #expect(queues.counts.scheduledQueues == 3)
        queues.promote(now: 0, route: everythingToSink)
        #expect(queues.counts.scheduledQueues == 0 && queues.counts.readyQueues == 1)
        let site = SiteKey(pool: "default", site: sink)
        let taken = queues.takeAll(from: site)
        #expect(taken.count == 3 && queues.counts.readyQueues == 0 && queues.counts.inFlight == 3)
        // A retry goes back into a queue that was reaped: it is recreated.
        var retry = taken[0]
        queues.land(retry.key)
        retry.dueAt = 10
        queues.schedule(retry)
        #expect(queues.counts.scheduledQueues == 1 && queues.counts.total == 3)
        var states: [String] = []
        queues.forEachEntry { _, state in states.append(state.rawValue) }
        #expect(states.sorted() == ["in-flight", "in-flight", "scheduled"])
    }

    @Test func unroutableEntriesAreHeldWithTheReasonAndReleased() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        queues.schedule(entry(1, domain: "nowhere.test"))
        queues.promote(now: 0) { _ in .hold(reason: "no route") }
        #expect(queues.counts.held == 1 && queues.heldEntries.first?.reason == "no route")
        queues.releaseHeld(now: 5)
        #expect(queues.counts.held == 0 && queues.counts.scheduled == 1)
        queues.promote(now: 5, route: everythingToSink)
        #expect(queues.counts.ready == 1)
    }

    @Test func limboKeepsTheEntryTheErrorAndTheUnrecordedFinals() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        queues.schedule(entry(1))
        queues.promote(now: 0, route: everythingToSink)
        let taken = queues.take(from: SiteKey(pool: "default", site: sink))!
        queues.moveToLimbo(taken.key, replacing: taken, unrecordedFinals: taken.recipients, error: "disk I/O error", now: 7)
        #expect(queues.counts.inFlight == 0 && queues.counts.limbo == 1)
        #expect(queues.limboEntries == [DeliveryQueues.Parked(entry: taken, reason: "disk I/O error", since: 7, unrecordedFinals: taken.recipients)])
        #expect(queues.location(of: taken.key) == .limbo, "in limbo, the entry is still somewhere")
        queues.releaseLimbo(taken.key)
        #expect(queues.counts.limbo == 0 && queues.counts.scheduled == 1 && queues.location(of: taken.key) == .scheduled)
    }

    /// The index the sweep asks follows every move, and counts distinct messages.
    @Test func everyMoveKeepsTheLocationIndex() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        let site = SiteKey(pool: "default", site: sink)
        let first = entry(1), second = entry(2)
        queues.schedule(first)
        queues.schedule(second)
        #expect(queues.location(of: first.key) == .scheduled && queues.queuedMessages == 2)
        queues.promote(now: 0, route: everythingToSink)
        #expect(queues.location(of: first.key) == .ready)
        let taken = queues.take(from: site)!
        #expect(queues.location(of: taken.key) == .inFlight)
        queues.putBack(taken.key, to: site)
        #expect(queues.location(of: taken.key) == .ready)
        queues.returnToScheduled(from: site, dueAt: 5)
        #expect(queues.location(of: first.key) == .scheduled && queues.location(of: second.key) == .scheduled)
        queues.promote(now: 5, route: everythingToSink)
        let done = queues.take(from: site)!
        queues.land(done.key)
        #expect(queues.location(of: done.key) == nil && queues.queuedMessages == 1, "an entry that landed is nowhere")
        let dropped = queues.dropScheduledSilently(5)
        #expect(dropped.isEmpty, "nothing scheduled")
        queues.returnToScheduled(from: site, dueAt: 9)
        let silently = queues.dropScheduledSilently(5)
        #expect(silently.count == 1 && queues.location(of: silently[0].key) == nil && queues.counts.total == 0 && queues.queuedMessages == 0)
    }

    /// An operator's retry or delete takes matching entries from every place but flight and
    /// limbo, up to a limit, keeping every count and the location index right.
    @Test func takeMatchingMovesSelectedEntriesIntoFlightFromEveryQueue() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        var attempted = entry(1, domain: "slow.test", dueAt: 50)
        attempted.attempts = 2
        queues.schedule(attempted)
        queues.schedule(entry(2, domain: "slow.test", dueAt: 50))
        queues.schedule(entry(3, domain: "fast.test"))
        queues.schedule(entry(4, domain: "fast.test"))
        queues.schedule(entry(5, domain: "nowhere.test"))
        #expect(queues.counts.deferred == 1, "an attempted scheduled entry is deferred")
        queues.promote(now: 0) { $0 == "nowhere.test" ? .hold(reason: "no route") : .deliver(sink) }
        let inFlight = queues.take(from: SiteKey(pool: "default", site: sink))!
        #expect(queues.counts.scheduled == 2 && queues.counts.ready == 1 && queues.counts.held == 1 && queues.counts.inFlight == 1)

        let none = queues.takeMatching(limit: 10) { entry, _ in entry.domain == "other.test" }
        #expect(none.isEmpty && queues.counts.total == 5)
        let oneOfSlow = queues.takeMatching(limit: 1) { entry, state in entry.domain == "slow.test" && state == .scheduled }
        #expect(oneOfSlow.count == 1 && queues.counts.scheduled == 1 && queues.counts.inFlight == 2)
        let rest = queues.takeMatching(limit: 100) { entry, _ in entry.key != inFlight.key }
        #expect(Set(rest.map(\.domain)) == ["slow.test", "fast.test", "nowhere.test"] && rest.count == 3, "\(rest.map(\.domain))")
        #expect(queues.counts.scheduled == 0 && queues.counts.ready == 0 && queues.counts.held == 0 && queues.counts.deferred == 0)
        #expect(queues.counts.inFlight == 5 && queues.counts.scheduledQueues == 0 && queues.counts.readyQueues == 0)
        let again = queues.takeMatching(limit: 100) { _, _ in true }
        #expect(again.isEmpty, "entries in flight are never taken")
        for taken in oneOfSlow + rest {
            #expect(queues.location(of: taken.key) == .inFlight)
            queues.land(taken.key)
        }
        #expect(queues.counts.total == 1 && queues.queuedMessages == 1)
    }

    /// The depth per tenant and domain, and its oldest reception, follow entries in and out;
    /// the oldest is found again only when it left.
    @Test func depthsFollowEntriesAndTheOldestIsFoundAgainWhereItLeft() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        var entries: [QueueEntry] = []
        for (number, received) in [(1, 300), (2, 100), (3, 200)] as [(Int, UInt64)] {
            var made = entry(number, domain: "a.test")
            made.receivedAt = received
            entries.append(made)
            queues.schedule(made)
        }
        queues.schedule(entry(4, domain: "b.test", tenant: "globex"))
        let a = DepthKey(tenant: "acme", domain: "a.test")
        #expect(queues.depths[a]?.entries == 3 && queues.depths[a]?.oldestReceivedAt == 100)
        #expect(queues.depths[DepthKey(tenant: "globex", domain: "b.test")]?.entries == 1)
        queues.promote(now: 0, route: everythingToSink)
        let taken = queues.take(from: SiteKey(pool: "default", site: sink))!
        queues.putBack(taken.key, to: SiteKey(pool: "default", site: sink))
        #expect(queues.depths[a]?.entries == 3, "moves between places count nothing")
        for oldest in queues.takeMatching(limit: 10, { entry, _ in entry.id == entries[1].id }) { queues.land(oldest.key) }
        #expect(queues.depths[a]?.entries == 2, "leaving counts")
        queues.refreshOldest()
        #expect(queues.depths[a]?.oldestReceivedAt == 200, "the oldest left: 200 is the oldest now")
        #expect(queues.refreshOldest() == 0)
        for taken in queues.takeMatching(limit: 10, { _, _ in true }) { queues.land(taken.key) }
        #expect(queues.depths.isEmpty && queues.counts.total == 0)
    }

    @Test func poolsSeparateReadyQueues() {
        var queues = DeliveryQueues(readyQueueSize: 10)
        queues.schedule(entry(1, pool: "shared"))
        queues.schedule(entry(2, pool: "dedicated"))
        queues.promote(now: 0, route: everythingToSink)
        #expect(Set(queues.readySites.map(\.site.pool)) == ["shared", "dedicated"])
    }
}

@Suite struct RetryScheduleTests {
    let schedule = RetrySchedule(SmarthostConfiguration.TrafficClass(
        name: "t", firstRetry: .seconds(60), retryMultiplier: 2, maxRetryInterval: .seconds(600), expiry: .seconds(3_600)))

    @Test func delaysGrowByTheMultiplierUpToTheCap() {
        #expect((1...6).map { schedule.delay(afterAttempt: $0) } == [60_000, 120_000, 240_000, 480_000, 600_000, 600_000])
        #expect(schedule.delay(afterAttempt: 10_000) == 600_000)
    }

    @Test func expiresWhenTheNextAttemptWouldBeTooLate() {
        #expect(schedule.decide(afterAttempt: 1, now: 1_000, receivedAt: 1_000) == .retry(at: 61_000))
        #expect(schedule.decide(afterAttempt: 5, now: 3_500_000, receivedAt: 0) == .expire)
        #expect(schedule.decide(afterAttempt: 5, now: 2_999_999, receivedAt: 0) == .retry(at: 3_599_999))
    }
}
