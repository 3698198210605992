import Crypto
import CryptoExtras
import Foundation

/// A salted scrypt hash of a password, in the PHC string format
/// `$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (unpadded base64), as passlib and others write it.
/// The configuration holds only these strings, never passwords.
public struct PasswordHash: Sendable, Equatable, CustomStringConvertible {
    /// log2 of scrypt's cost N.
    public let logRounds: Int
    public let blockSize: Int
    public let parallelism: Int
    public let salt: [UInt8]
    public let hash: [UInt8]

    /// The cost of new hashes: N=2^14, r=8, p=1 (16 MiB, tens of milliseconds), scrypt's
    /// interactive-login recommendation.
    public static let defaultLogRounds = 14
    /// scrypt needs 128·r·N octets; a hash asking for more is refused when it is read, so a
    /// configuration cannot make each login take gigabytes.
    public static let maximumMemory = 256 << 20

    /// Reads a PHC string; the error says what is wrong without echoing the hash.
    public init(parsing text: String) throws(PasswordHashError) {
        let fields = text.split(separator: "$", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0].isEmpty, fields[1] == "scrypt" else {
            throw PasswordHashError("expected a scrypt hash such as $scrypt$ln=14,r=8,p=1$<salt>$<hash> (see `smarthost hash-password`)")
        }
        var parameters: [Substring: Int] = [:]
        for pair in fields[2].split(separator: ",", omittingEmptySubsequences: false) {
            let parts = pair.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2, ["ln", "r", "p"].contains(parts[0]), parameters[parts[0]] == nil,
                  parts[1].count <= 3, let value = Int(parts[1]) else {
                throw PasswordHashError("expected the scrypt parameters as ln=<n>,r=<n>,p=<n>")
            }
            parameters[parts[0]] = value
        }
        guard let logRounds = parameters["ln"], let blockSize = parameters["r"], let parallelism = parameters["p"] else {
            throw PasswordHashError("expected the scrypt parameters as ln=<n>,r=<n>,p=<n>")
        }
        guard (10...24).contains(logRounds), (1...32).contains(blockSize), (1...16).contains(parallelism),
              128 * blockSize << logRounds <= Self.maximumMemory else {
            throw PasswordHashError("scrypt parameters out of range (ln 10-24, r 1-32, p 1-16, at most 256 MiB)")
        }
        guard let salt = Self.decode(fields[3]), (8...64).contains(salt.count) else {
            throw PasswordHashError("expected a salt of 8 to 64 octets in unpadded base64")
        }
        guard let hash = Self.decode(fields[4]), (16...64).contains(hash.count) else {
            throw PasswordHashError("expected a hash of 16 to 64 octets in unpadded base64")
        }
        self.init(logRounds: logRounds, blockSize: blockSize, parallelism: parallelism, salt: salt, hash: hash)
    }

    private init(logRounds: Int, blockSize: Int, parallelism: Int, salt: [UInt8], hash: [UInt8]) {
        self.logRounds = logRounds
        self.blockSize = blockSize
        self.parallelism = parallelism
        self.salt = salt
        self.hash = hash
    }

    /// Hashes `password` with a fresh random salt.
    public static func make(password: String, logRounds: Int = defaultLogRounds) throws -> PasswordHash {
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max) }
        let derived = try derive(password, salt: salt, logRounds: logRounds, blockSize: 8, parallelism: 1, length: 32)
        return PasswordHash(logRounds: logRounds, blockSize: 8, parallelism: 1, salt: salt, hash: derived)
    }

    /// Whether `password` is the one hashed; the comparison takes the same time wherever the
    /// first difference is. Slow on purpose: call it off the event loops.
    public func matches(_ password: String) -> Bool {
        guard let derived = try? Self.derive(password, salt: salt, logRounds: logRounds, blockSize: blockSize,
                                             parallelism: parallelism, length: hash.count) else { return false }
        return zip(derived, hash).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    public var description: String {
        "$scrypt$ln=\(logRounds),r=\(blockSize),p=\(parallelism)$\(Self.encode(salt))$\(Self.encode(hash))"
    }

    private static func derive(_ password: String, salt: [UInt8], logRounds: Int, blockSize: Int, parallelism: Int,
                               length: Int) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: length,
                                           rounds: 1 << logRounds, blockSize: blockSize, parallelism: parallelism)
        return key.withUnsafeBytes { Array($0) }
    }

    private static func encode(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    private static func decode(_ text: Substring) -> [UInt8]? {
        guard !text.isEmpty, text.count <= 128, !text.contains("=") else { return nil }
        let padded = String(text) + String(repeating: "=", count: (4 - text.count % 4) % 4)
        return Data(base64Encoded: padded).map { Array($0) }
    }
}

public struct PasswordHashError: Error, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
