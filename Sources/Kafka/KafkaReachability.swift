import ServiceLifecycle
import Synchronization

/// Asks the brokers for metadata every `interval` and remembers whether they answered: what a
/// node's readiness endpoint reports (an ingress node that cannot reach Kafka can only answer
/// 451, so the load balancer should send clients elsewhere).
public final class KafkaReachability: Service, Sendable {
    private let admin: KafkaAdmin
    private let interval: Duration
    private let problem = Mutex<String?>("Kafka not checked yet")

    public init(bootstrapServers: [String], interval: Duration = .seconds(2)) throws(KafkaError) {
        self.admin = try KafkaAdmin(bootstrapServers: bootstrapServers, timeout: interval)
        self.interval = interval
    }

    /// Why Kafka counts as unreachable, or nil when the last check succeeded.
    public var unreachableReason: String? { problem.withLock { $0 } }

    /// Checks once, now.
    public func check() async {
        do {
            _ = try await admin.topics()
            problem.withLock { $0 = nil }
        } catch {
            problem.withLock { $0 = "Kafka unreachable: \(error)" }
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.check()
                try? await Task.sleep(for: self.interval)
            }
        }
    }
}
