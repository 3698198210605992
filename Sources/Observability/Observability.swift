import Logging
import Metrics
import Prometheus

/// How a node writes its logs.
public enum LogFormat: String, Sendable, CaseIterable {
    /// One JSON object per line (the default for nodes).
    case json
    /// swift-log's plain text, for people at a terminal.
    case text
}

/// Process-wide logging and metrics set-up for a node. swift-log and swift-metrics can be
/// bootstrapped once per process, so a node calls `bootstrap` once, first thing.
public enum Observability {
    /// Routes every `Logger` to `format` at `level`, tagging each line with the node id, and
    /// every swift-metrics metric to a Prometheus registry, which it returns for the
    /// `/metrics` endpoint.
    public static func bootstrap(level: Logger.Level, format: LogFormat, nodeID: String) -> PrometheusCollectorRegistry {
        LoggingSystem.bootstrap { label in
            switch format {
            case .json:
                return JSONLogHandler(label: label, level: level, staticFields: [("node", nodeID)])
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                handler[metadataKey: "node"] = .string(nodeID)
                return handler
            }
        }
        return bootstrapMetrics()
    }

    /// Routes swift-metrics to a new Prometheus registry and returns it.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// The registry's metrics in the Prometheus text exposition format (version 0.0.4).
    public static func prometheusText(_ registry: PrometheusCollectorRegistry) -> String {
        registry.emitToString()
    }

    /// The Content-Type of `prometheusText`.
    public static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"
}
