import Testing
@testable import Credentials

@Suite struct PasswordHashTests {
    @Test func aHashMatchesItsPasswordOnlyAndSurvivesItsOwnText() throws {
        let hash = try PasswordHash.make(password: "correct horse", logRounds: 10)
        #expect(hash.matches("correct horse"))
        #expect(!hash.matches("correct horsf"))
        #expect(!hash.matches(""))
        let text = hash.description
        #expect(text.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(try PasswordHash(parsing: text) == hash)
        #expect(try PasswordHash.make(password: "correct horse", logRounds: 10) != hash, "a fresh salt each time")
    }

    /// A vector from another implementation (Python's hashlib.scrypt, which wraps OpenSSL):
    /// `hashlib.scrypt(b"password", salt=b"saltsaltsaltsalt", n=1024, r=8, p=1, dklen=32)`.
    @Test func aHashWrittenByAnotherImplementationIsVerified() throws {
        let hash = try PasswordHash(parsing: "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$BVMRKqdiVYikKAaPR1wucsKUKvw4TuPLkdEYtoSHas4")
        #expect(hash.matches("password"))
        #expect(!hash.matches("Password"))
    }

    @Test(arguments: [
        ("", "expected a scrypt hash"),
        ("password", "expected a scrypt hash"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "expected a scrypt hash"),
        ("$scrypt$ln=14,r=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "ln=<n>,r=<n>,p=<n>"),
        ("$scrypt$ln=14,r=8,p=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "ln=<n>,r=<n>,p=<n>"),
        ("$scrypt$ln=99999999999999,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "ln=<n>,r=<n>,p=<n>"),
        ("$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "out of range"),
        ("$scrypt$ln=18,r=32,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "out of range"),
        ("$scrypt$ln=14,r=8,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "out of range"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "salt"),
        ("$scrypt$ln=14,r=8,p=1$!!!!$aGFzaGhhc2hoYXNoaGFzaA", "salt"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA", "salt"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaA", "hash"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$", "hash"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA$extra", "expected a scrypt hash"),
    ])
    func malformedHashesAreRefusedWithTheReason(text: String, reason: String) {
        #expect(throws: PasswordHashError.self) { try PasswordHash(parsing: text) }
        do { _ = try PasswordHash(parsing: text) } catch {
            #expect(error.description.contains(reason), "\(error)")
            #expect(!error.description.contains("aGFzaGhhc2g"), "the hash is not echoed")
        }
    }
}

@Suite struct LoginFailureLimiterTests {
    let start = ContinuousClock.now

    @Test func aClientIsBlockedAfterTheLimitUntilTheWindowEnds() {
        var limiter = LoginFailureLimiter(limit: 3, window: .seconds(60))
        let afterEach = [0, 1, 2].map { limiter.recordFailure("192.0.2.1", now: start + .seconds($0)) }
        #expect(afterEach == [false, false, true])
        #expect(limiter.isBlocked("192.0.2.1", now: start + .seconds(59)))
        #expect(!limiter.isBlocked("192.0.2.2", now: start + .seconds(3)), "other clients are not affected")
        #expect(!limiter.isBlocked("192.0.2.1", now: start + .seconds(60)), "the block expires by itself")
        let afresh = limiter.recordFailure("192.0.2.1", now: start + .seconds(61))
        #expect(!afresh, "a new window starts counting afresh")
    }

    @Test func memoryStaysBoundedUnderAFloodOfAddresses() {
        var limiter = LoginFailureLimiter(limit: 3, window: .seconds(60), pruneThreshold: 100)
        for index in 0..<1_000 {
            _ = limiter.recordFailure("198.51.100.\(index)", now: start + .seconds(Double(index)))
        }
        #expect(limiter.trackedClients <= 160)
    }

    @Test func aFloodWithinOneWindowIsNotTrackedBeyondTheBound() {
        var limiter = LoginFailureLimiter(limit: 3, window: .seconds(60), pruneThreshold: 100)
        for index in 0..<1_000 {
            _ = limiter.recordFailure("198.51.100.\(index)", now: start)
        }
        #expect(limiter.trackedClients == 100)
        for _ in 0..<3 { _ = limiter.recordFailure("198.51.100.5", now: start + .seconds(1)) }
        #expect(limiter.isBlocked("198.51.100.5", now: start + .seconds(1)), "clients already tracked are still counted")
        _ = limiter.recordFailure("203.0.113.1", now: start + .seconds(61))
        #expect(limiter.trackedClients == 1, "once the flood's windows end, they are pruned")
    }
}
