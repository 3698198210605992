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

    /// Routes swift-metrics to a new Prometheus registry and returns it. Each metric gets its
    /// help text and histogram buckets from `MetricCatalog`.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(CatalogMetricsFactory(registry: registry))
        return registry
    }

    /// The registry's metrics in the Prometheus text exposition format (version 0.0.4).
    public static func prometheusText(_ registry: PrometheusCollectorRegistry) -> String {
        registry.emitToString()
    }

    /// The Content-Type of `prometheusText`.
    public static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"
}

/// swift-metrics into a Prometheus registry, like swift-prometheus' `PrometheusMetricsFactory`,
/// but with each metric's `# HELP` text and histogram buckets from `MetricCatalog` (swift-metrics
/// has no place for them). Timers are histograms in seconds; a recorder that aggregates is a
/// histogram of values; meters and other recorders are gauges.
struct CatalogMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    /// swift-prometheus' default buckets, for metrics the catalogue gives none.
    private static let defaults = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricCatalog.description(of: label)?.help ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: Self.defaults.defaultValueHistogramBuckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = MetricCatalog.description(of: label)?.buckets ?? Self.defaults.defaultDurationHistogramBuckets
        return registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        switch handler {
        case let gauge as Prometheus.Gauge: registry.unregisterGauge(gauge)
        case let histogram as ValueHistogram: registry.unregisterValueHistogram(histogram)
        default: break
        }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
