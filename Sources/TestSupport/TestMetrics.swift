import Observability
import Prometheus

/// swift-metrics can be bootstrapped once per process, and every test suite runs in one
/// process: suites that read metrics share this registry. Touch it before creating the clients
/// whose metrics a test reads, so their handles come from it.
public enum TestMetrics {
    public static let registry: PrometheusCollectorRegistry = Observability.bootstrapMetrics()

    /// The value of one sample line (`name{labels} value`) in the exposition, or nil.
    public static func value(of sample: String) -> Double? {
        for line in Observability.prometheusText(registry).split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.dropFirst(sample.count + 1))
        }
        return nil
    }
}
