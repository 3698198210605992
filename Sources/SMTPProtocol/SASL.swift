/// The server side of an AUTH exchange (RFC 4954) for PLAIN (RFC 4616) and LOGIN: turns the
/// client's base64 lines into a username and password, or into the reply that refuses them.
/// Pure: the connection handler feeds it lines and does what each step says.
public struct SASLExchange: Sendable, Equatable {
    public enum Step: Sendable, Equatable {
        /// Send `334 <challenge>` and pass the client's next line to `respond`.
        case challenge(String)
        /// Check these credentials.
        case credentials(username: String, password: String)
        /// The exchange failed before any check: send this reply.
        case failed(SMTPReply)
    }

    private enum State: Sendable, Equatable {
        case plain
        case loginUsername
        case loginPassword(username: String)
        case done
    }

    private var state: State

    /// Starts an exchange; `mechanism` is uppercased and one of PLAIN and LOGIN.
    public init(mechanism: String) {
        state = mechanism == "LOGIN" ? .loginUsername : .plain
    }

    /// The first step: an initial response given with the AUTH command, or the first challenge.
    public mutating func start(initialResponse: String?) -> Step {
        guard let initialResponse else {
            switch state {
            case .loginUsername: return .challenge("VXNlcm5hbWU6")  // "Username:"
            default: return .challenge("")
            }
        }
        // RFC 4954 4: "=" is an initial response of zero length.
        return respond(initialResponse == "=" ? "" : initialResponse)
    }

    /// The client's answer to a challenge: one line of base64, or `*` to cancel.
    public mutating func respond(_ line: String) -> Step {
        guard state != .done else { return fail(503, 5, 5, 1, "Error: no authentication in progress") }
        if line == "*" { return fail(501, 5, 7, 0, "Authentication cancelled") }
        guard let decoded = Base64.decode(line) else {
            return fail(501, 5, 5, 2, "Cannot decode the response (base64 expected)")
        }
        switch state {
        case .plain:
            // authzid NUL authcid NUL passwd; an authzid other than the authcid is not allowed.
            let parts = decoded.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let username = Self.text(parts[1]), let password = Self.text(parts[2]),
                  !username.isEmpty else {
                return fail(501, 5, 5, 2, "Malformed PLAIN response")
            }
            if !parts[0].isEmpty && Self.text(parts[0]) != username {
                return fail(535, 5, 7, 8, "Authentication credentials invalid")
            }
            state = .done
            return .credentials(username: username, password: password)
        case .loginUsername:
            guard let username = Self.text(decoded[...]), !username.isEmpty, !decoded.contains(0) else {
                return fail(501, 5, 5, 2, "Malformed LOGIN username")
            }
            state = .loginPassword(username: username)
            return .challenge("UGFzc3dvcmQ6")  // "Password:"
        case .loginPassword(let username):
            guard let password = Self.text(decoded[...]), !decoded.contains(0) else {
                return fail(501, 5, 5, 2, "Malformed LOGIN password")
            }
            state = .done
            return .credentials(username: username, password: password)
        case .done:
            return fail(503, 5, 5, 1, "Error: no authentication in progress")
        }
    }

    private mutating func fail(_ code: Int, _ c: Int, _ s: Int, _ d: Int, _ text: String) -> Step {
        state = .done
        return .failed(SMTPReply(code, EnhancedStatusCode(c, s, d), text))
    }

    /// UTF-8 without control characters, at most 255 octets (RFC 4616 allows that much).
    private static func text(_ bytes: ArraySlice<UInt8>) -> String? {
        guard bytes.count <= 255, !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// Standard base64 (RFC 4648 4) with padding, strict: no whitespace, no stray characters.
enum Base64 {
    static func decode(_ text: String) -> [UInt8]? {
        let input = Array(text.utf8)
        guard input.count % 4 == 0 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(input.count / 4 * 3)
        var index = 0
        while index < input.count {
            var quantum: UInt32 = 0
            var padding = 0
            for offset in 0..<4 {
                let character = input[index + offset]
                let value: UInt32
                switch character {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(character - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(character - UInt8(ascii: "a")) + 26
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(character - UInt8(ascii: "0")) + 52
                case UInt8(ascii: "+"): value = 62
                case UInt8(ascii: "/"): value = 63
                case UInt8(ascii: "=") where index + 4 == input.count && offset >= 2:
                    padding += 1
                    value = 0
                default: return nil
                }
                // Nothing but padding may follow padding.
                if padding > 0 && character != UInt8(ascii: "=") { return nil }
                quantum = quantum << 6 | value
            }
            let bytes = [UInt8(quantum >> 16 & 0xFF), UInt8(quantum >> 8 & 0xFF), UInt8(quantum & 0xFF)]
            output += bytes.prefix(3 - padding)
            index += 4
        }
        return output
    }
}
