/// `MessageEvent.json` written by hand: compact, keys sorted, nil fields left out, strings
/// escaped as RFC 8259 requires (and slashes not) — the bytes JSONEncoder gives with
/// `.sortedKeys` and `.withoutEscapingSlashes`, which EventJSONTests checks. JSONEncoder was
/// a twentieth of an ingress and of a delivery node's CPU, once per event.
struct EventJSON {
    private(set) var bytes: [UInt8] = []
    private var first = true

    init(capacity: Int) {
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    mutating func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    private mutating func key(_ name: StaticString) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
    }

    mutating func field(_ name: StaticString, _ value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }

    mutating func field(_ name: StaticString, _ value: (some BinaryInteger)?) {
        guard let value else { return }
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func field(_ name: StaticString, _ value: Bool?) {
        guard let value else { return }
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    mutating func field(_ name: StaticString, _ values: [String]?) {
        guard let values else { return }
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    mutating func field(_ name: StaticString, _ response: MessageEvent.Response?) {
        guard let response else { return }
        key(name)
        var nested = EventJSON(capacity: 64)
        nested.field("code", response.code)
        nested.field("enhanced", response.enhanced)
        nested.field("text", response.text)
        bytes.append(contentsOf: nested.finish())
    }

    private mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0C: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                          hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension MessageEvent {
    /// The record's value: compact JSON with sorted keys (the same event, the same bytes).
    public var json: [UInt8] {
        var writer = EventJSON(capacity: 256)
        // Sorted by key.
        writer.field("attempt", attempt)
        writer.field("client", client)
        writer.field("dsn", dsn)
        writer.field("id", id)
        writer.field("job", job)
        writer.field("nextAttemptAt", nextAttemptAt)
        writer.field("node", node)
        writer.field("offset", offset)
        writer.field("partition", partition)
        writer.field("peer", peer)
        writer.field("pool", pool)
        writer.field("queue", queue)
        writer.field("reason", reason)
        writer.field("receivedAt", receivedAt)
        writer.field("recipient", recipient)
        writer.field("recipients", recipients)
        writer.field("response", response)
        writer.field("rule", rule)
        writer.field("sender", sender)
        writer.field("site", site)
        writer.field("size", size)
        writer.field("source", source)
        writer.field("tenant", tenant)
        writer.field("time", time)
        writer.field("tls", tls)
        writer.field("topic", topic)
        writer.field("type", type.rawValue)
        return writer.finish()
    }
}
