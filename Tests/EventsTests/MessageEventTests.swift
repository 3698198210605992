import Testing
@testable import Events

@Suite struct MessageEventTests {
    let reception = MessageEvent(type: .reception, id: "01M84PDTVGMF2CK148JYVWVEZK", tenant: "acme", time: 1_795_000_000_000,
                                 node: "ingress-1", sender: "", recipients: ["a@example.com"], size: 2048, job: "spring",
                                 client: "192.0.2.7:4000", topic: "smarthost.acme", partition: 3, offset: 1234)

    @Test func anEventSurvivesItsJSONAndTheJSONIsStable() throws {
        let text = String(decoding: reception.json, as: UTF8.self)
        #expect(text == #"{"client":"192.0.2.7:4000","id":"01M84PDTVGMF2CK148JYVWVEZK","job":"spring","node":"ingress-1","offset":1234,"partition":3,"recipients":["a@example.com"],"sender":"","size":2048,"tenant":"acme","time":1795000000000,"topic":"smarthost.acme","type":"Reception"}"#)
        #expect(try MessageEvent(json: reception.json) == reception)
    }

    @Test(arguments: [
        ("", "not JSON"),
        ("[]", "\"\""),
        ("{\"type\":\"Reception\"}", "missing \"id\""),
        ("{\"type\":\"Teleported\",\"id\":\"x\",\"tenant\":\"t\",\"time\":1,\"node\":\"n\"}", "\"type\""),
        ("{\"type\":\"Reception\",\"id\":\"x\",\"tenant\":\"t\",\"time\":-1,\"node\":\"n\"}", "\"time\""),
        ("{\"type\":\"Reception\",\"id\":\"x\",\"tenant\":\"t\",\"time\":\"soon\",\"node\":\"n\"}", "\"time\""),
        ("{\"type\":\"Reception\",\"id\":\"\",\"tenant\":\"t\",\"time\":1,\"node\":\"n\"}", "empty id"),
        ("{\"type\":\"Reception\",\"id\":\"x\",\"tenant\":\"t\",\"time\":1,\"node\":\"n\",\"recipients\":[1]}", "\"recipients"),
        ("{\"type\":\"Reception\",\"id\":\"x\",\"tenant\":\"t\",\"time\":1,\"node\":\"n\"", "not JSON"),
        ("\u{FF}\u{FE}", "not JSON"),
    ])
    func malformedRecordsAreRefusedWithTheReason(text: String, reason: String) {
        do {
            _ = try MessageEvent(json: Array(text.utf8))
            Issue.record("\(text.debugDescription) was accepted")
        } catch {
            #expect(error.description.contains(reason), "\(error)")
        }
    }

    @Test func anOversizedRecordIsRefusedBeforeParsing() {
        #expect(throws: EventError.self) { try MessageEvent(json: Array(repeating: 0x20, count: MessageEvent.maximumSize + 1)) }
    }
}
