import Foundation
import Kafka
import QueueRecord
import Testing
import TestSupport

/// SMTP AUTH against a real `smarthost ingress` process: swaks as the client, scrypt hashes
/// made by `smarthost hash-password`, the message checked in Kafka.
@Suite(.timeLimit(.minutes(3)))
struct IngressAuthTests {
    /// Hashes `password` with the binary, as an operator would (stdin, never an argument).
    func hash(_ password: String) async throws -> String {
        let result = try await runCommand("/bin/sh", ["-c", "printf '%s\\n' \"$0\" | \"$1\" hash-password --cost 10", password, SmarthostCLITests.binary])
        #expect(result.status == 0, "\(result.errors)")
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func swaks(_ port: Int, _ arguments: [String]) async throws -> CommandResult {
        try await runCommand(try findExecutable("swaks"), ["--server", "127.0.0.1:\(port)", "--from", "app@acme.test",
                                                            "--to", "someone@example.com", "--header", "Subject: auth test"] + arguments)
    }

    @Test func loginOverStartTLSAndImplicitTLSIsRequiredToRelayAndGuessingIsThrottled() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let certificate = try await TestCertificate.make(commonName: "mx.test")
        let (startTLSPort, implicitPort, plaintextPort) = (try Loopback.freePort(), try Loopback.freePort(), try Loopback.freePort())
        let tls = "certificate_file: \"\(certificate.certificatePath)\", private_key_file: \"\(certificate.privateKeyPath)\""
        let node = try IngressProcess.start(broker: broker, name: "ingress-auth", yaml: """
            tenants:
              acme:
                max_recipients: 2
                credentials:
                  - {username: app@acme.test, password_hash: "\(try await hash("correct horse"))"}
            ingress:
              hostname: mx.test
              auth_failure_limit: 3
              listeners:
                - {address: "127.0.0.1:\(startTLSPort)", \(tls)}
                - {address: "127.0.0.1:\(implicitPort)", \(tls), implicit_tls: true}
                - {address: "127.0.0.1:\(plaintextPort)"}
            """)
        defer { node.stop() }
        try await waitForGreeting(node.process, port: startTLSPort, greeting: "220 mx.test ")

        // Without a login nothing is relayed (127.0.0.1 is no tenant's trusted network).
        let anonymous = try await swaks(startTLSPort, ["--tls"])
        #expect(anonymous.output.contains("554 5.7.1 Relay access denied"), "\(anonymous.output)")

        let overStartTLS = try await swaks(startTLSPort, ["--tls", "--auth", "PLAIN", "--auth-user", "app@acme.test", "--auth-password", "correct horse"])
        #expect(overStartTLS.status == 0, "\(overStartTLS.output)\(overStartTLS.errors)")
        #expect(overStartTLS.output.contains("235 2.7.0 Authentication successful"))
        let overImplicitTLS = try await swaks(implicitPort, ["--tlsc", "--auth", "LOGIN", "--auth-user", "app@acme.test", "--auth-password", "correct horse"])
        #expect(overImplicitTLS.status == 0, "\(overImplicitTLS.output)\(overImplicitTLS.errors)")
        #expect(overImplicitTLS.output.contains("235 2.7.0 Authentication successful"))

        let records = try await readRecords(broker, topic: "smarthost.acme", count: 2)
        let accepted = try records.map { try AcceptedMessage(key: $0.key, headers: $0.headers.map { ($0.name, $0.value) }, value: $0.value) }
        #expect(accepted.map(\.authenticatedUser) == ["app@acme.test", "app@acme.test"])
        #expect(accepted.map(\.tls) == ["TLS", "TLS"])
        #expect(String(decoding: accepted[0].content.prefix(200), as: UTF8.self).contains("with ESMTPSA id"), "RFC 3848: authenticated over TLS")

        // In plaintext AUTH is neither offered nor accepted: the password must not cross in clear.
        let plaintext = String(decoding: Loopback.exchange(port: plaintextPort, request: Array("EHLO c\r\nAUTH PLAIN AGFwcEBhY21lLnRlc3QAY29ycmVjdCBob3JzZQ==\r\nQUIT\r\n".utf8), timeout: .seconds(5)) {
            String(decoding: $0, as: UTF8.self).contains("221 ")
        } ?? [], as: UTF8.self)
        #expect(!plaintext.contains("AUTH PLAIN LOGIN"))
        #expect(plaintext.contains("530 5.7.0 Must issue a STARTTLS command first\r\n"), "\(plaintext)")

        // The tenant's own recipient limit holds after the login.
        let tooMany = try await swaks(startTLSPort, ["--tls", "--auth", "PLAIN", "--auth-user", "app@acme.test", "--auth-password", "correct horse",
                                                     "--to", "a@example.com,b@example.com,c@example.com"])
        #expect(tooMany.output.contains("452 4.5.3 Too many recipients"), "\(tooMany.output)")
        #expect(tooMany.status == 0, "RFC 5321: the message goes to the recipients accepted")

        // Wrong passwords: refused, then the address is throttled and even the right password
        // is refused unchecked until the window ends.
        for _ in 0..<2 {
            let wrong = try await swaks(startTLSPort, ["--tls", "--auth", "PLAIN", "--auth-user", "app@acme.test", "--auth-password", "wrong"])
            #expect(wrong.output.contains("535 5.7.8 Authentication credentials invalid"), "\(wrong.output)")
        }
        let third = try await swaks(startTLSPort, ["--tls", "--auth", "PLAIN", "--auth-user", "nobody", "--auth-password", "wrong"])
        #expect(third.output.contains("421 4.7.0 mx.test Error: too many failed authentications, try again later"), "\(third.output)")
        let right = try await swaks(startTLSPort, ["--tls", "--auth", "PLAIN", "--auth-user", "app@acme.test", "--auth-password", "correct horse"])
        #expect(right.output.contains("421 4.7.0"), "\(right.output)")
        let all = try await readRecords(broker, topic: "smarthost.acme", count: 4, timeout: .seconds(15))
        #expect(all.count == 3, "nothing but the three logged-in messages reached Kafka")
        let recipientCounts = try all.map { try AcceptedMessage(key: $0.key, headers: $0.headers.map { ($0.name, $0.value) }, value: $0.value).recipients.count }
        #expect(recipientCounts.sorted() == [1, 1, 2], "the message over the limit went to the two recipients accepted")
    }
}
