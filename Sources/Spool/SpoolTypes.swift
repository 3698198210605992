import QueueRecord
import SMTPProtocol

/// Where a spooled message's record was in Kafka.
public struct SpoolPosition: Sendable, Equatable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

/// What a delivery node keeps in memory about a spooled message: everything but the content
/// (and the ingress details — client, HELO, TLS, AUTH — which stay in the spool's file).
public struct SpooledMessage: Sendable, Equatable {
    public var id: MessageID
    public var tenant: String
    public var sender: Mailbox?
    /// The recipients with no final outcome yet, in their original order.
    public var pendingRecipients: [Mailbox]
    public var receivedAt: UInt64
    public var job: String?
    /// The egress pool the message asked for (X-Smarthost-Pool), nil for its tenant's.
    public var pool: String?
    public var lane: AcceptedMessage.Lane
    public var trafficClass: String
    public var smtputf8: Bool
    public var eightBit: Bool
    /// The content's length in octets.
    public var size: Int
    public var attempts: Int
    /// Milliseconds since the epoch; 0 means as soon as possible.
    public var nextAttemptAt: UInt64
    /// When this node spooled it, milliseconds since the epoch.
    public var spooledAt: UInt64
    public var position: SpoolPosition?

    public init(id: MessageID, tenant: String, sender: Mailbox?, pendingRecipients: [Mailbox], receivedAt: UInt64,
                job: String?, pool: String? = nil, lane: AcceptedMessage.Lane, trafficClass: String, smtputf8: Bool, eightBit: Bool,
                size: Int, attempts: Int, nextAttemptAt: UInt64, spooledAt: UInt64, position: SpoolPosition?) {
        self.id = id
        self.tenant = tenant
        self.sender = sender
        self.pendingRecipients = pendingRecipients
        self.receivedAt = receivedAt
        self.job = job
        self.pool = pool
        self.lane = lane
        self.trafficClass = trafficClass
        self.smtputf8 = smtputf8
        self.eightBit = eightBit
        self.size = size
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.spooledAt = spooledAt
        self.position = position
    }
}

/// A Kafka record kept aside because it is not a valid message.
public struct QuarantinedRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var reason: String
    /// Milliseconds since the epoch.
    public var quarantinedAt: UInt64
    public var key: [UInt8]?
    /// The value's length; `quarantinedValue(topic:partition:offset:)` reads the bytes.
    public var valueSize: Int

    public init(topic: String, partition: Int32, offset: Int64, reason: String, quarantinedAt: UInt64, key: [UInt8]?, valueSize: Int) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        self.quarantinedAt = quarantinedAt
        self.key = key
        self.valueSize = valueSize
    }
}

/// How much group commit is sharing: `operations / commits` write operations per fsync.
public struct SpoolStatistics: Sendable, Equatable {
    /// Transactions committed by the writer (each one fsync of the WAL).
    public var commits = 0
    /// Write operations (insert, settle, remove, quarantine calls) in those transactions.
    public var operations = 0
    /// The most operations one commit carried.
    public var largestBatch = 0
}

public struct SpoolError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The spool's path exists and is not a directory.
        case notADirectory
        /// The directory or the database file could not be created or opened.
        case cannotOpen
        /// Another `Spool` (in this process or another) has the directory open.
        case locked
        /// `spool.sqlite` is not an SQLite database, or is one that is not a spool.
        case notASpool
        /// `spool.sqlite` was written by a newer version (its schema version).
        case newerSchema(Int)
        /// SQLite found the file damaged.
        case corrupt
        /// A stored row no longer decodes (an address that does not parse, an unknown lane...).
        case malformedRow
        /// The caller's input cannot be stored as is.
        case invalidInput
        /// The spool was closed.
        case closed
        /// Anything else SQLite refused: disk full, I/O error...
        case sqlite
    }

    public var kind: Kind
    /// What was being done: `open`, `insert`, `settle <id>`, `read message <id>`...
    public var operation: String
    /// The database file (or the directory, for directory problems).
    public var path: String
    public var reason: String
    /// SQLite's extended result code, when SQLite reported the error.
    public var sqliteCode: Int32?

    init(_ kind: Kind, _ operation: String, path: String, reason: String, sqliteCode: Int32? = nil) {
        self.kind = kind
        self.operation = operation
        self.path = path
        self.reason = reason
        self.sqliteCode = sqliteCode
    }

    public var description: String {
        "spool \(path): \(operation) failed: \(reason)" + (sqliteCode.map { " (SQLite code \($0))" } ?? "")
    }

    /// Fills in what the inner layers (statements, row decoding) do not know.
    func during(_ operation: String, path: String) -> SpoolError {
        var error = self
        if error.operation.isEmpty { error.operation = operation }
        if error.path.isEmpty { error.path = path }
        return error
    }
}
