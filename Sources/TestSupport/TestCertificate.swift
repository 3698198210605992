import Foundation

/// A throwaway self-signed certificate and key (PEM files) made with the openssl command,
/// for TLS tests on loopback.
public struct TestCertificate: Sendable {
    public let certificatePath: String
    public let privateKeyPath: String

    public static func make(commonName: String) async throws -> TestCertificate {
        let directory = NSTemporaryDirectory() + "smarthost-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificate = TestCertificate(certificatePath: "\(directory)/cert.pem", privateKeyPath: "\(directory)/key.pem")
        let result = try await runCommand(try findExecutable("openssl"), [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=\(commonName)",
            "-keyout", certificate.privateKeyPath, "-out", certificate.certificatePath])
        guard result.status == 0 else {
            throw ServerStartError(server: "openssl", reason: "could not make a test certificate", log: result.errors)
        }
        return certificate
    }
}
