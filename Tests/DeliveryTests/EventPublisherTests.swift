import Delivery
import Events
import Foundation
import Testing

@Suite struct EventPublisherTests {
    @Test func theLocalLogRotatesBySizeKeepingTheConfiguredNumberOfFiles() throws {
        let directory = NSTemporaryDirectory() + "events-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Each event is about 150 octets: a rotation every two or three events.
        let publisher = try EventPublisher(producer: nil, topic: "unused", directory: directory, maximumSize: 300, keep: 2)
        let events = (0..<20).map { MessageEvent(type: .delivery, id: "id-\($0)", tenant: "acme", time: Int64($0), node: "n1", sender: "a@b.test") }
        for event in events { publisher.publish([event]) }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"])
        // What is kept is the newest events, in order, each line a whole event.
        let kept = try ["events.jsonl.2", "events.jsonl.1", "events.jsonl"].flatMap { name in
            try String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8).split(separator: "\n").map { try MessageEvent(json: Array($0.utf8)) }
        }
        #expect(!kept.isEmpty && kept == Array(events.suffix(kept.count)))
    }

    @Test func anUnwritableDirectoryIsAClearError() {
        #expect(throws: (any Error).self) {
            _ = try EventPublisher(producer: nil, topic: "unused", directory: "/proc/no-such-dir/events", maximumSize: 1_000, keep: 1)
        }
    }
}
