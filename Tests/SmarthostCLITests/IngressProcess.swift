import Foundation
import Testing
import TestSupport

/// A `smarthost ingress` process on a configuration made of the node, kafka and redis sections
/// (pointing at `broker`) followed by `yaml` (tenants, ingress, ...).
struct IngressProcess {
    let process: ManagedProcess
    let directory: String
    let adminPort: Int

    static func start(broker: TansuBroker, name: String, yaml: String, redisPort: Int = 6379) throws -> IngressProcess {
        let directory = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let adminPort = try Loopback.freePort()
        let config = "\(directory)/cluster.yaml"
        try """
            node: {id: \(name), log_format: json, admin_listen: "127.0.0.1:\(adminPort)", admin_token: \(DeliveryProcess.adminToken)}
            kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s}
            redis: {address: "127.0.0.1:\(redisPort)"}
            \(yaml)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = try ManagedProcess(name: "smarthost ingress", executable: SmarthostCLITests.binary,
                                         arguments: ["ingress", "--config", config], logPath: "\(directory)/ingress.log")
        return IngressProcess(process: process, directory: directory, adminPort: adminPort)
    }

    func stop() { process.stop() }
}
