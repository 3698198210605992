import Foundation
import Metrics
import Testing
import TestSupport
@testable import Observability

/// The metric catalogue against the sources, docs/metrics.md and promtool's rules.
@Suite struct MetricCatalogTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Every `label: "smarthost_..."` in Sources/, with the files that use it.
    static func metricNamesInSources() throws -> [String: [String]] {
        let sources = root.appendingPathComponent("Sources")
        let pattern = try Regex(#"label: "(smarthost_[a-z0-9_]+)""#)
        var names: [String: [String]] = [:]
        let files = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for match in text.matches(of: pattern) {
                if let name = match.output[1].substring { names[String(name), default: []].append(file) }
            }
        }
        return names
    }

    @Test func everyMetricTheSourcesCreateIsCataloguedAndDocumented() throws {
        let used = try Self.metricNamesInSources()
        #expect(used.count >= 30, "the scan found the metrics: \(used.keys.sorted())")
        for (name, files) in used.sorted(by: { $0.key < $1.key }) {
            #expect(MetricCatalog.description(of: name) != nil,
                    "\(name) (\(files.joined(separator: ", "))) is not in MetricCatalog: add it there, with its help text, and to docs/metrics.md")
        }
        let reference = try String(contentsOf: Self.root.appendingPathComponent("docs/metrics.md"), encoding: .utf8)
        for metric in MetricCatalog.all {
            #expect(reference.contains("`\(metric.name)`"), "docs/metrics.md does not list \(metric.name)")
        }
    }

    /// The naming rules `promtool check metrics` applies, checked here for every metric,
    /// including those no test makes a node export.
    @Test func everyNameFollowsThePrometheusConventions() {
        #expect(Set(MetricCatalog.all.map(\.name)).count == MetricCatalog.all.count, "each name once")
        for metric in MetricCatalog.all {
            let name = metric.name
            #expect(name.hasPrefix("smarthost_") && name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" }, "\(name): snake case, smarthost_ prefix")
            #expect((metric.kind == .counter) == name.hasSuffix("_total"), "\(name): counters, and only counters, end in _total")
            #expect(!["_count", "_sum", "_bucket"].contains { name.hasSuffix($0) }, "\(name): a suffix Prometheus reserves for histograms")
            #expect(metric.kind != .histogram || name.hasSuffix("_seconds") || name.hasSuffix("_bytes"), "\(name): a histogram names its unit")
            #expect(!["_ms", "_milliseconds", "_sec", "_kb", "_mb"].contains { name.hasSuffix($0) }, "\(name): base units only")
            #expect(!metric.help.isEmpty && !metric.help.contains("\n"), "\(name): one line of help")
            #expect(!metric.labels.contains("le") && !metric.labels.contains("quantile"), "\(name): reserved label")
            #expect((metric.buckets == nil) || metric.kind == .histogram, "\(name): buckets are for histograms")
        }
    }

    /// The whole catalogue as an exposition (every metric at zero), through promtool itself.
    @Test func promtoolAcceptsTheWholeCatalogue() async throws {
        var text = ""
        for metric in MetricCatalog.all {
            text += "# HELP \(metric.name) \(metric.help)\n# TYPE \(metric.name) \(metric.kind.rawValue)\n"
            let labels = metric.labels.map { "\($0)=\"x\"" }
            func sample(_ suffix: String, _ extra: [String] = []) {
                let all = labels + extra
                text += metric.name + suffix + (all.isEmpty ? "" : "{" + all.joined(separator: ",") + "}") + " 0\n"
            }
            if metric.kind == .histogram {
                sample("_bucket", [#"le="+Inf""#])
                sample("_sum")
                sample("_count")
            } else {
                sample("")
            }
        }
        let problems = try await promtoolProblems(text)
        #expect(problems.isEmpty, "promtool check metrics:\n\(problems)")
    }

    /// swift-metrics handles get the catalogue's help text and buckets in the exposition.
    @Test func theFactoryExportsHelpAndBucketsFromTheCatalogue() throws {
        let registry = TestMetrics.registry
        _ = Gauge(label: "smarthost_spool_bytes")
        _ = Metrics.Timer(label: "smarthost_redis_command_seconds", dimensions: [("command", "CATALOGUE-TEST")])
        let text = Observability.prometheusText(registry)
        let spool = try #require(MetricCatalog.description(of: "smarthost_spool_bytes"))
        #expect(text.contains("# HELP smarthost_spool_bytes \(spool.help)\n# TYPE smarthost_spool_bytes gauge\n"))
        #expect(text.contains("# TYPE smarthost_redis_command_seconds histogram"))
        #expect(text.contains(#"smarthost_redis_command_seconds_bucket{command="CATALOGUE-TEST",le="0.00025"} 0"#),
                "Redis commands get sub-millisecond buckets")
        #expect(text.contains(#"smarthost_redis_command_seconds_bucket{command="CATALOGUE-TEST",le="2.5"} 0"#))
    }
}
