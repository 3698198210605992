import NIOCore
import NodeHTTP

/// An ingress node's admin API (docs/admin-api.md): what it listens on, its open sessions,
/// whether it is draining, and whether Kafka answers; with `testing.fault_injection`, the
/// faults of docs/reconciler.md.
public struct IngressAdmin: Sendable {
    let node: IngressNode
    let nodeID: String
    let kafkaProblem: @Sendable () -> String?
    let faults: IngressFaults?

    public init(node: IngressNode, nodeID: String, faults: IngressFaults? = nil, kafkaProblem: @escaping @Sendable () -> String?) {
        self.node = node
        self.nodeID = nodeID
        self.faults = faults
        self.kafkaProblem = kafkaProblem
    }

    struct Status: Encodable {
        struct Listener: Encodable {
            var address: String
            var openConnections: Int
        }

        var node: String
        var listeners: [Listener]
        var draining: Bool
        /// Nil while Kafka answers.
        var kafkaProblem: String?
    }

    public func handle(_ request: AdminRequest) async -> AdminResponse? {
        if request.method == "POST", request.path.hasPrefix("/admin/faults/") { return fault(String(request.path.dropFirst("/admin/faults/".count))) }
        guard request.method == "GET", request.path == "/admin/ingress/status" else { return nil }
        guard request.query.isEmpty else { return .error(400, "/admin/ingress/status takes no query") }
        let status = Status(node: nodeID,
                            listeners: node.listeners.map { Status.Listener(address: Self.text($0.localAddress), openConnections: $0.openConnections) },
                            draining: node.isDraining, kafkaProblem: kafkaProblem())
        return .json(status)
    }

    private func fault(_ name: String) -> AdminResponse {
        guard let faults else { return .faultInjectionOff }
        guard name == "crash-after-ack" else { return .error(404, "no such fault: \(name) (crash-after-ack)") }
        faults.crashAfterNextAck()
        struct Armed: Encodable { var fault: String }
        return .json(Armed(fault: name))
    }

    /// `127.0.0.1:2525` or `[::1]:2525`; `closed` once the listener is.
    static func text(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "closed" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
