import Foundation
import Logging
import Metrics
import Testing
import TestSupport
@testable import Observability

@Suite struct JSONLogTests {
    let timestamp = Date(timeIntervalSince1970: 1_795_000_000.5)

    func decode(_ line: String) throws -> [String: Any] {
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().contains("\n") == false, "one record, one line")
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any])
    }

    @Test func aRecordIsOneParsableJSONLineWithItsFields() throws {
        let line = JSONLogHandler.line(timestamp: timestamp, level: .warning, label: "smarthost.ingress", message: "queued",
                                       staticFields: [("node", "ingress-1")],
                                       metadata: ["message_id": "01J", "recipients": .array(["a@x", "b@y"]), "attempt": .stringConvertible(3)])
        let fields = try decode(line)
        #expect(fields["level"] as? String == "warning")
        #expect(fields["logger"] as? String == "smarthost.ingress")
        #expect(fields["node"] as? String == "ingress-1")
        #expect(fields["msg"] as? String == "queued")
        #expect(fields["message_id"] as? String == "01J")
        #expect(fields["recipients"] as? [String] == ["a@x", "b@y"])
        #expect(fields["attempt"] as? String == "3")
        #expect(fields["ts"] as? String == "2026-11-18T11:06:40.500Z")
    }

    /// Text from the network (SMTP commands, replies) ends up in logs: it must not break the
    /// line structure or the JSON.
    @Test(arguments: [
        "quote \" backslash \\ done",
        "CRLF\r\nRCPT TO:<forged@example.com>",
        "NUL \0 BEL \u{07} ESC \u{1b} DEL \u{7f}",
        "line separator \u{2028} paragraph \u{2029}",
        "ünïcödé ✉️ 郵便",
    ])
    func hostileTextStaysInsideItsField(_ text: String) throws {
        let line = JSONLogHandler.line(timestamp: timestamp, level: .info, label: "l", message: text,
                                       staticFields: [], metadata: ["peer": .string(text), text: "key from the wire"])
        let fields = try decode(line)
        #expect(fields["msg"] as? String == text)
        #expect(fields["peer"] as? String == text)
        #expect(fields[text] as? String == "key from the wire")
    }
}

@Suite struct PrometheusExportTests {
    @Test func metricsRecordedThroughSwiftMetricsAppearInTheExposition() {
        let registry = TestMetrics.registry
        Counter(label: "smarthost_test_events_total", dimensions: [("kind", "delivery")]).increment(by: 3)
        Gauge(label: "smarthost_test_queue_depth").record(42)
        Metrics.Timer(label: "smarthost_test_latency_seconds").recordMilliseconds(20)
        let text = Observability.prometheusText(registry)
        #expect(text.contains("# TYPE smarthost_test_events_total counter"))
        #expect(text.contains("smarthost_test_events_total{kind=\"delivery\"} 3"))
        #expect(text.contains("smarthost_test_queue_depth 42"))
        #expect(text.contains("# TYPE smarthost_test_latency_seconds histogram"))
        #expect(text.contains("smarthost_test_latency_seconds_count 1"))
    }
}
