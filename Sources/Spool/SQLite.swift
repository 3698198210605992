import CSQLite

/// A value bound to a statement parameter.
enum SQLValue {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])

    static func text(_ value: String?) -> SQLValue { value.map(SQLValue.text) ?? .null }
    static func int(_ value: Int) -> SQLValue { .int(Int64(value)) }
    static func bool(_ value: Bool) -> SQLValue { .int(value ? 1 : 0) }
}

/// One SQLite connection and its prepared statements.
///
/// Deliberately not Sendable: each connection is opened, used and closed by exactly one of the
/// spool's threads (the writer, or one reader), so it never needs a lock of its own
/// (`SQLITE_OPEN_NOMUTEX`).
final class Connection {
    let db: OpaquePointer
    let path: String
    private var statements: [String: OpaquePointer] = [:]
    /// Frames in the WAL after the last commit, reported by SQLite's WAL hook (writer only).
    var walPages = 0

    init(path: String, readOnly: Bool) throws(SpoolError) {
        var handle: OpaquePointer?
        let access = readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
        let rc = sqlite3_open_v2(path, &handle, access | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, nil)
        guard rc == SQLITE_OK, let handle else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(handle)
            throw SpoolError(.cannotOpen, "open", path: path, reason: reason, sqliteCode: rc)
        }
        db = handle
        self.path = path
        // Another process (the sqlite3 CLI, a backup) may hold a lock for a moment.
        sqlite3_busy_timeout(db, 10_000)
    }

    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements = [:]
        sqlite3_wal_hook(db, nil, nil)
        sqlite3_close_v2(db)
    }

    /// The error SQLite reports for the last call on this connection.
    func error(_ rc: Int32) -> SpoolError {
        let code = sqlite3_extended_errcode(db)
        let kind: SpoolError.Kind = switch rc & 0xFF {
        case SQLITE_NOTADB: .notASpool
        case SQLITE_CORRUPT: .corrupt
        default: .sqlite
        }
        return SpoolError(kind, "", path: path, reason: String(cString: sqlite3_errmsg(db)), sqliteCode: code == 0 ? rc : code)
    }

    var inTransaction: Bool { sqlite3_get_autocommit(db) == 0 }

    /// Records the WAL size after each commit, so the writer can checkpoint after it has
    /// answered its callers rather than inside their commit (which is what wal_autocheckpoint does).
    func trackWAL() {
        sqlite3_wal_hook(db, { context, _, _, pages in
            Unmanaged<Connection>.fromOpaque(context!).takeUnretainedValue().walPages = Int(pages)
            return SQLITE_OK
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    func checkpoint() {
        sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        walPages = 0
    }

    /// A cached prepared statement, reset and with its parameters bound.
    private func prepare(_ sql: String, _ values: [SQLValue]) throws(SpoolError) -> OpaquePointer {
        let statement: OpaquePointer
        if let cached = statements[sql] {
            statement = cached
        } else {
            var prepared: OpaquePointer?
            let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil)
            guard rc == SQLITE_OK, let prepared else { throw error(rc) }
            statements[sql] = prepared
            statement = prepared
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null:
                rc = sqlite3_bind_null(statement, index)
            case .int(let number):
                rc = sqlite3_bind_int64(statement, index, number)
            case .text(let text):
                var text = text
                rc = text.withUTF8 { bytes in
                    // An empty buffer may have no address, which SQLite would take as NULL.
                    guard let base = bytes.baseAddress, !bytes.isEmpty else { return sqlite3_bind_text(statement, index, "", 0, nil) }
                    return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                        sqlite3_bind_text64(statement, index, $0, UInt64(bytes.count), transient, UInt8(SQLITE_UTF8))
                    }
                }
            case .blob(let bytes):
                rc = bytes.withUnsafeBytes { raw in
                    guard let base = raw.baseAddress, !raw.isEmpty else { return sqlite3_bind_zeroblob(statement, index, 0) }
                    return sqlite3_bind_blob64(statement, index, base, UInt64(raw.count), transient)
                }
            }
            guard rc == SQLITE_OK else {
                sqlite3_clear_bindings(statement)
                throw error(rc)
            }
        }
        return statement
    }

    /// Runs a statement that returns no rows; the number of rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: [SQLValue] = []) throws(SpoolError) -> Int {
        let statement = try prepare(sql, values)
        defer { sqlite3_reset(statement); sqlite3_clear_bindings(statement) }
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw error(rc) }
        return Int(sqlite3_changes(db))
    }

    /// Runs a query, calling `row` for each row until it returns false.
    func query(_ sql: String, _ values: [SQLValue] = [], _ row: (Row) throws(SpoolError) -> Bool) throws(SpoolError) {
        let statement = try prepare(sql, values)
        defer { sqlite3_reset(statement); sqlite3_clear_bindings(statement) }
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc) }
            guard try row(Row(statement: statement)) else { return }
        }
    }

    /// The first row's first column as an integer, nil without rows.
    func integer(_ sql: String, _ values: [SQLValue] = []) throws(SpoolError) -> Int64? {
        var result: Int64?
        try query(sql, values) { row throws(SpoolError) in
            result = row.isNull(0) ? nil : row.int(0)
            return false
        }
        return result
    }

    /// The first row's first column as text, nil without rows.
    func text(_ sql: String, _ values: [SQLValue] = []) throws(SpoolError) -> String? {
        var result: String?
        try query(sql, values) { row throws(SpoolError) in
            result = try row.text(0)
            return false
        }
        return result
    }

    func exists(_ sql: String, _ values: [SQLValue]) throws(SpoolError) -> Bool {
        var found = false
        try query(sql, values) { _ throws(SpoolError) in
            found = true
            return false
        }
        return found
    }
}

/// SQLITE_TRANSIENT: SQLite copies the bound bytes before the call returns.
private var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }

/// The current row of a query; valid only inside the query's callback.
struct Row {
    let statement: OpaquePointer

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement, column) == SQLITE_NULL }
    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

    /// Text as stored; nil for NULL. Invalid UTF-8 (a file edited by hand, a bad disk) is an
    /// error rather than silently replaced characters in an address.
    func text(_ column: Int32) throws(SpoolError) -> String? {
        guard !isNull(column) else { return nil }
        // The pointer first, then its length (SQLite's documented order).
        let bytes = sqlite3_column_text(statement, column)
        let count = Int(sqlite3_column_bytes(statement, column))
        guard let bytes, count > 0 else { return "" }
        guard let text = String(validating: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self) else {
            let name = String(cString: sqlite3_column_name(statement, column))
            throw SpoolError(.malformedRow, "", path: "", reason: "column \(name) is not UTF-8")
        }
        return text
    }

    func blob(_ column: Int32) -> [UInt8]? {
        guard !isNull(column) else { return nil }
        let bytes = sqlite3_column_blob(statement, column)
        let count = Int(sqlite3_column_bytes(statement, column))
        guard let bytes, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }

    func size(_ column: Int32) -> Int { Int(sqlite3_column_bytes(statement, column)) }
}
