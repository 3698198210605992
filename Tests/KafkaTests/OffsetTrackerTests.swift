import Testing
@testable import Kafka

@Suite struct OffsetTrackerTests {
    let p0 = TopicPartition(topic: "t", partition: 0)
    let p1 = TopicPartition(topic: "t", partition: 1)

    @Test func nothingIsCommittableUntilSomethingIsDone() {
        var tracker = OffsetTracker()
        for offset in 10...14 { tracker.handedOut(p0, offset: Int64(offset)) }
        #expect(tracker.committable().isEmpty)
        #expect(tracker.outstandingCount == 5)
    }

    @Test func skippedOffsetsAreReportedPerPartitionNeverAtTheFirstRecord() {
        var tracker = OffsetTracker()
        #expect(tracker.handedOut(p0, offset: 100) == nil, "where a partition starts is the committed offset's business")
        #expect(tracker.handedOut(p0, offset: 101) == nil)
        #expect(tracker.handedOut(p0, offset: 105) == 102..<105)
        #expect(tracker.handedOut(p1, offset: 7) == nil)
        #expect(tracker.handedOut(p0, offset: 106) == nil)
        tracker.forget([p0])
        #expect(tracker.handedOut(p0, offset: 300) == nil, "a partition assigned again starts afresh")
    }

    @Test func aGapIsSeenBeforeAnythingIsHandedOut() {
        var tracker = OffsetTracker()
        #expect(tracker.gap(before: 50, in: p0) == nil, "nothing handed out yet: no gap")
        tracker.handedOut(p0, offset: 50)
        #expect(tracker.gap(before: 51, in: p0) == nil)
        #expect(tracker.gap(before: 54, in: p0) == 51..<54)
        #expect(tracker.gap(before: 54, in: p0) == 51..<54, "asking hands nothing out")
        #expect(tracker.handedOut(p0, offset: 51) == nil, "the refetched record closes the gap")
    }

    @Test func commitsOnlyTheContiguousDonePrefix() {
        var tracker = OffsetTracker()
        for offset in 0..<10 { tracker.handedOut(p0, offset: Int64(offset)) }
        #expect(markDone(&tracker, p0, offset: 0))
        #expect(markDone(&tracker, p0, offset: 1))
        #expect(markDone(&tracker, p0, offset: 5))  // above the gap at 2
        #expect(tracker.committable() == [p0: 2])
        #expect(markDone(&tracker, p0, offset: 2))
        #expect(markDone(&tracker, p0, offset: 3))
        #expect(markDone(&tracker, p0, offset: 4))
        #expect(tracker.committable() == [p0: 6])  // 5 was already done
    }

    /// What the consumer's lag is measured from: the first offset not yet done.
    @Test func theNextOffsetIsTheFirstNotDone() {
        var tracker = OffsetTracker()
        #expect(tracker.nextOffset(p0) == nil, "nothing handed out yet")
        for offset in 20..<25 { tracker.handedOut(p0, offset: Int64(offset)) }
        #expect(tracker.nextOffset(p0) == 20)
        #expect(markDone(&tracker, p0, offset: 21))
        #expect(tracker.nextOffset(p0) == 20, "21 waits for 20")
        #expect(markDone(&tracker, p0, offset: 20))
        #expect(tracker.nextOffset(p0) == 22)
        #expect(tracker.nextOffset(p1) == nil)
    }

    @Test func allDoneCommitsPastTheLastRecordEvenWithOffsetGaps() {
        var tracker = OffsetTracker()
        for offset in [3, 7, 8] { tracker.handedOut(p0, offset: Int64(offset)) }  // compacted or transaction markers
        for offset in [8, 3, 7] { #expect(markDone(&tracker, p0, offset: Int64(offset))) }
        #expect(tracker.committable() == [p0: 9])
        #expect(tracker.outstandingCount == 0)
    }

    @Test func committedOffsetsAreNotOfferedAgain() {
        var tracker = OffsetTracker()
        tracker.handedOut(p0, offset: 0)
        tracker.handedOut(p1, offset: 0)
        tracker.markDone(p0, offset: 0)
        tracker.markDone(p1, offset: 0)
        tracker.markCommitted([p0: 1])
        #expect(tracker.committable() == [p1: 1])
    }

    @Test func recordsItDoesNotHoldAreRefused() {
        var tracker = OffsetTracker()
        tracker.handedOut(p0, offset: 5)
        #expect(!markDone(&tracker, p0, offset: 4))   // never handed out
        #expect(!markDone(&tracker, p1, offset: 5))   // unknown partition
        #expect(markDone(&tracker, p0, offset: 5))
        #expect(!markDone(&tracker, p0, offset: 5))   // already done
        #expect(tracker.committable() == [p0: 6])
    }

    @Test func revokedPartitionsAreForgottenAndLateMarksIgnored() {
        var tracker = OffsetTracker()
        tracker.handedOut(p0, offset: 0)
        tracker.handedOut(p1, offset: 0)
        tracker.forget([p0])
        #expect(!markDone(&tracker, p0, offset: 0))
        #expect(markDone(&tracker, p1, offset: 0))
        #expect(tracker.committable() == [p1: 1])
    }

    /// A first fetch answer that begins past where the partition's reading starts is a gap
    /// like any other (Tansu once answered a new group's first fetch from offset 6).
    @Test func aFirstFetchBeginningPastTheExpectedStartIsAGap() {
        var tracker = OffsetTracker()
        let partition = TopicPartition(topic: "t", partition: 1)
        tracker.expect(partition, from: 0)
        #expect(tracker.committable().isEmpty, "nothing read yet, nothing to commit")
        #expect(tracker.gap(before: 6, in: partition) == 0..<6)
        #expect(tracker.handedOut(partition, offset: 0) == nil, "reading from the expected start is no gap")
        tracker.markDone(partition, offset: 0)
        #expect(tracker.committable() == [partition: 1])
        var fresh = OffsetTracker()
        fresh.expect(partition, from: -1001)
        #expect(fresh.handedOut(partition, offset: 6) == nil, "an unknown start (a negative offset) is not expected")
    }
}

/// `#expect` cannot take a mutating call; this forwards one.
private func markDone(_ tracker: inout OffsetTracker, _ partition: TopicPartition, offset: Int64) -> Bool {
    tracker.markDone(partition, offset: offset)

}
