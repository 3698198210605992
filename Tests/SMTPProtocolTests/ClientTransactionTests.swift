import Testing
@testable import SMTPProtocol

@Suite struct ClientTransactionTests {
    let sender = Mailbox(localPart: "app", domain: "acme.test")
    let recipients = [Mailbox(localPart: "a", domain: "x.test"), Mailbox(localPart: "b", domain: "x.test")]

    func capabilities(_ lines: String...) -> ServerCapabilities {
        ServerCapabilities(ehlo: SMTPReply(250, nil, ["mx.x.test"] + lines))
    }

    func reply(_ code: Int, _ text: String = "x") -> SMTPReply { SMTPReply(code, nil, text) }

    @Test func pipelinedTransactionWithOneRecipientRefused() {
        let (started, first) = ClientTransaction.start(sender: sender, recipients: recipients, size: 1234, eightBit: true, smtputf8: false,
                                                       capabilities: capabilities("PIPELINING", "SIZE 10000", "8BITMIME"))
        guard var transaction = started else { Issue.record("refused up front"); return }
        #expect(first == .send(["MAIL FROM:<app@acme.test> SIZE=1234 BODY=8BITMIME", "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>", "DATA"]))
        #expect(transaction.handle(reply(250)) == .awaitReply)
        #expect(transaction.handle(reply(550, "no such user")) == .awaitReply)
        #expect(transaction.handle(reply(250)) == .awaitReply)
        #expect(transaction.handle(reply(354)) == .sendData)
        let queued = reply(250, "queued")
        #expect(transaction.handle(queued) == .finished([.permanentFailure(reply(550, "no such user")), .delivered(queued)], reset: false))
    }

    @Test func withoutPipeliningCommandsGoOneByOneAndARefusedMailStops() {
        let (started, first) = ClientTransaction.start(sender: nil, recipients: recipients, size: 10, eightBit: true, smtputf8: false,
                                                       capabilities: capabilities())
        guard var transaction = started else { Issue.record("refused up front"); return }
        #expect(first == .send(["MAIL FROM:<>"]), "no SIZE or BODY the server did not offer")
        let refused = reply(451, "try later")
        #expect(transaction.handle(refused) == .finished([.transientFailure(refused), .transientFailure(refused)], reset: true))
    }

    @Test func withoutPipeliningEveryRecipientRefusedSendsNoData() {
        let (started, _) = ClientTransaction.start(sender: sender, recipients: recipients, size: 10, eightBit: false, smtputf8: false,
                                                   capabilities: capabilities())
        guard var transaction = started else { Issue.record("refused up front"); return }
        #expect(transaction.handle(reply(250)) == .send(["RCPT TO:<a@x.test>"]))
        #expect(transaction.handle(reply(550)) == .send(["RCPT TO:<b@x.test>"]))
        #expect(transaction.handle(reply(452)) == .finished([.permanentFailure(reply(550)), .transientFailure(reply(452))], reset: true))
    }

    @Test func aPipeliningServerThatSays354AfterRefusingEveryoneGetsAnEmptyDataEnd() {
        let (started, _) = ClientTransaction.start(sender: sender, recipients: [recipients[0]], size: 10, eightBit: false, smtputf8: false,
                                                   capabilities: capabilities("PIPELINING"))
        guard var transaction = started else { Issue.record("refused up front"); return }
        _ = transaction.handle(reply(250))
        _ = transaction.handle(reply(550))
        #expect(transaction.handle(reply(354)) == .endEmptyData([.permanentFailure(reply(550))]))
    }

    @Test func aRefusedDataCommandOrFinalReplyAppliesToTheAcceptedRecipients() {
        let (started, _) = ClientTransaction.start(sender: sender, recipients: recipients, size: 10, eightBit: false, smtputf8: false,
                                                   capabilities: capabilities("PIPELINING"))
        guard var transaction = started else { Issue.record("refused up front"); return }
        _ = transaction.handle(reply(250))
        _ = transaction.handle(reply(250))
        _ = transaction.handle(reply(550))
        #expect(transaction.handle(reply(554, "no valid recipients")) == .finished([.permanentFailure(reply(554, "no valid recipients")), .permanentFailure(reply(550))], reset: true))
    }

    @Test func noDowngradeOfSMTPUTF8AndNoMessageOverTheServersSize() {
        let utf8 = ClientTransaction.start(sender: sender, recipients: recipients, size: 10, eightBit: false, smtputf8: true,
                                           capabilities: capabilities("PIPELINING"))
        #expect(utf8.0 == nil)
        guard case .finished(let outcomes, _) = utf8.1, case .permanentFailure(let refusal) = outcomes.first else {
            Issue.record("not refused: \(utf8.1)")
            return
        }
        #expect(refusal.code == 553 && refusal.enhancedCode == EnhancedStatusCode(5, 6, 7) && outcomes.count == 2)
        let big = ClientTransaction.start(sender: sender, recipients: recipients, size: 20_000, eightBit: false, smtputf8: false,
                                          capabilities: capabilities("SIZE 10000"))
        guard case .finished(let bigOutcomes, _) = big.1, case .permanentFailure(let tooBig) = bigOutcomes.first else {
            Issue.record("not refused: \(big.1)")
            return
        }
        #expect(tooBig.code == 552 && tooBig.enhancedCode == EnhancedStatusCode(5, 3, 4))
        let fine = ClientTransaction.start(sender: sender, recipients: recipients, size: 10, eightBit: false, smtputf8: true,
                                           capabilities: capabilities("SMTPUTF8"))
        #expect(fine.1 == .send(["MAIL FROM:<app@acme.test> SMTPUTF8"]))
    }
}
