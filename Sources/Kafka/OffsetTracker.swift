import DequeModule

/// Decides which offsets a consumer may commit: per partition, everything below the first
/// record handed out and not yet marked done. Records marked done out of order wait for the
/// gap below them to close, so a commit never passes a record that is not durably handled.
struct OffsetTracker {
    private struct PartitionState {
        /// Offsets handed out and not yet part of the committable prefix, in offset order.
        var outstanding: Deque<Int64> = []
        /// Offsets among `outstanding` already marked done.
        var done: Set<Int64> = []
        /// The first offset handed out: committing it would say nothing new.
        let start: Int64
        var nextCommit: Int64
        var committed: Int64?
        var lastHandedOut: Int64
    }

    private var partitions: [TopicPartition: PartitionState] = [:]

    /// The offsets between the previous record handed out of `partition` and `offset`, if
    /// any, without handing anything out.
    func gap(before offset: Int64, in partition: TopicPartition) -> Range<Int64>? {
        guard let last = partitions[partition]?.lastHandedOut, offset > last + 1 else { return nil }
        return (last + 1)..<offset
    }

    /// Where a newly assigned partition's reading starts (its committed offset, or the log's
    /// start for a new group), so that a first fetch answer beginning past it shows as a gap
    /// too: without it, the first record handed out would be taken as the start.
    mutating func expect(_ partition: TopicPartition, from offset: Int64) {
        guard partitions[partition] == nil, offset >= 0 else { return }
        partitions[partition] = PartitionState(start: offset, nextCommit: offset, lastHandedOut: offset - 1)
    }

    /// Records that `offset` of `partition` is now the caller's to handle. Offsets arrive in
    /// increasing order per partition, as Kafka delivers them. Returns the offsets skipped
    /// since the previous record of the partition, if any: the product's topics are neither
    /// compacted nor transactional, so a skip means a record the broker did not show (a
    /// commit past it would lose it), worth an alarm.
    @discardableResult
    mutating func handedOut(_ partition: TopicPartition, offset: Int64) -> Range<Int64>? {
        let skipped = gap(before: offset, in: partition)
        var state = partitions[partition] ?? PartitionState(start: offset, nextCommit: offset, lastHandedOut: offset - 1)
        state.outstanding.append(offset)
        state.lastHandedOut = offset
        partitions[partition] = state
        return skipped
    }

    /// Marks a handed-out record done. Returns false (and changes nothing) for a record this
    /// tracker does not hold: never handed out, already done, or of a revoked partition.
    @discardableResult
    mutating func markDone(_ partition: TopicPartition, offset: Int64) -> Bool {
        guard var state = partitions[partition], Self.contains(state.outstanding, offset), !state.done.contains(offset) else {
            return false
        }
        state.done.insert(offset)
        while let first = state.outstanding.first, state.done.remove(first) != nil {
            state.outstanding.removeFirst()
            state.nextCommit = first + 1
        }
        partitions[partition] = state
        return true
    }

    /// The offsets to commit now: the next offset to read, for partitions that moved since
    /// their last commit.
    func committable() -> [TopicPartition: Int64] {
        var result: [TopicPartition: Int64] = [:]
        for (partition, state) in partitions where state.nextCommit != (state.committed ?? state.start) {
            result[partition] = state.nextCommit
        }
        return result
    }

    /// The first offset of `partition` not yet done (what a commit now would store), or nil
    /// before anything of it was handed out.
    func nextOffset(_ partition: TopicPartition) -> Int64? {
        partitions[partition]?.nextCommit
    }

    mutating func markCommitted(_ offsets: [TopicPartition: Int64]) {
        for (partition, offset) in offsets {
            partitions[partition]?.committed = offset
        }
    }

    /// Drops partitions the group took away; records of theirs marked done later are ignored.
    mutating func forget(_ revoked: some Sequence<TopicPartition>) {
        for partition in revoked { partitions[partition] = nil }
    }

    /// Records handed out and not yet done, over all partitions.
    var outstandingCount: Int {
        partitions.values.reduce(0) { $0 + $1.outstanding.count - $1.done.count }
    }

    private static func contains(_ sorted: Deque<Int64>, _ offset: Int64) -> Bool {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid] < offset { low = mid + 1 } else { high = mid }
        }
        return low < sorted.count && sorted[low] == offset
    }
}
