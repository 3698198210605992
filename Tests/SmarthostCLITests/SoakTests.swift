import Foundation
import Testing
import TestSupport

/// `scripts/soak --short` (docs/reliability.md) against the tests' debug build: 3,000 messages
/// through a cluster/up cluster while an ingress node, both delivery nodes and the reconciler are
/// SIGKILLed and restarted, Tansu and Redis SIGSTOPped for 5 s, and Redis restarted empty. It
/// passes when every acknowledged message reached the sink and the ledger balances (exit 0);
/// a component that cannot start or come back is exit 2, and fails the test as loudly.
/// The soak's report and where its summary is are printed either way.
@Suite(.serialized, .timeLimit(.minutes(15)))
struct SoakTests {
    @Test func nothingAcknowledgedIsLostWhileProcessesAreKilledAndFrozen() async throws {
        let run = NSTemporaryDirectory() + "soak-run-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: run) }
        var output = ""
        var status: Int32?
        // Ports are free when picked; if cluster/up finds one taken before the load starts (a
        // neighbour took it meanwhile), the soak is tried again on new ones, at most three times.
        for _ in 1...3 {
            var environment = [
                "SMARTHOST_RUN_DIR=\(run)", "SMARTHOST_BINARY=\(SmarthostCLITests.binary)",
                "SMARTHOST_CTL_BINARY=\(SmarthostCLITests.ctl)",
            ]
            for name in ["KAFKA_PORT", "REDIS_PORT", "SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", "INGRESS_BASE_PORT",
                         "INGRESS_SUBMISSION_BASE_PORT", "INGRESS_SMTPS_BASE_PORT", "ADMIN_BASE_PORT",
                         "DELIVERY_ADMIN_BASE_PORT", "SINK_PORT", "DNS_PORT"] {
                environment.append("SMARTHOST_\(name)=\(try Loopback.freePort())")
            }
            let soak = try ManagedProcess(name: "scripts/soak", executable: "/usr/bin/env",
                                          arguments: environment + ["\(repositoryRoot)/scripts/soak", "--short"],
                                          logPath: "\(run).soak.log")
            defer { soak.stop(grace: .seconds(60)) }  // SIGTERM: the soak's trap stops its cluster
            status = try await soak.exitCode(within: .seconds(12 * 60))
            output = (try? String(contentsOfFile: "\(run).soak.log", encoding: .utf8)) ?? ""
            let portRace = status == 2 && !output.contains("soak: fault")
                && (output.contains("is taken") || output.contains("Address already in use"))
            if !portRace { break }
        }
        print("--- scripts/soak --short ---\n\(output)")
        #expect(status == 0, "scripts/soak --short exited \(status.map(String.init) ?? "not within 12 minutes"); its output is above")
        #expect(output.contains("soak: PASSED"))
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(run)/soak/summary.json"))) as? [String: Any]
        #expect(summary?["lost"] as? Int == 0)
        #expect(summary?["acknowledged"] as? Int == 3000, "every message is acknowledged in the end (the sender retries)")
        let faults = summary?["faults"] as? [[String: Any]] ?? []
        #expect(faults.count == 7 && faults.allSatisfy { $0["ok"] as? Bool == true }, "every fault carried out: \(faults)")
        try? FileManager.default.removeItem(atPath: "\(run).soak.log")
    }
}
