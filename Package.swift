// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "smarthost",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "smarthost", targets: ["smarthost"]),
        .executable(name: "smarthostctl", targets: ["smarthostctl"]),
        .executable(name: "sweep-bench", targets: ["SweepBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    ],
    targets: [
        // C libraries: each is imported by exactly one Swift module.
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka",
                       providers: [.apt(["librdkafka-dev (>= 2.2, or scripts/setup builds it)"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CUnbound", pkgConfig: "libunbound", providers: [.apt(["libunbound-dev"])]),

        .target(name: "Kafka", dependencies: [
            "CRdKafka",
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .target(name: "Redis", dependencies: [
            "CHiredis",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Cluster-wide limits through Redis: GCRA quotas, connection leases, the node registry,
        // traffic shaping adjustments, and the local fallback while Redis is down.
        .target(name: "Throttle", dependencies: [
            "Redis", "SmarthostConfig",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // SMTP as a language: commands, replies, addresses, the DATA stream. No I/O.
        .target(name: "SMTPProtocol"),
        // An accepted message as one Kafka record: written by ingress nodes, read by delivery nodes.
        .target(name: "QueueRecord", dependencies: ["SMTPProtocol", .product(name: "Crypto", package: "swift-crypto")]),
        // Delivery status notifications (RFC 3464, RFC 6533) as message bytes, and when not to send one. No I/O.
        .target(name: "DSN", dependencies: ["SMTPProtocol"]),
        // MX, A and AAAA lookups through libunbound, and the mail routes of domains (RFC 5321 §5.1, RFC 7505).
        .target(name: "DNS", dependencies: ["CUnbound", "SMTPProtocol", .product(name: "DequeModule", package: "swift-collections")]),
        // A delivery node's durable spool: SQLite in WAL mode, group commit (docs/spool.md).
        .target(name: "Spool", dependencies: ["CSQLite", "QueueRecord", "SMTPProtocol"]),
        // SMTP client over SwiftNIO: one outbound connection driving ClientTransaction.
        .target(name: "SMTPClient", dependencies: [
            "SMTPProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The delivery node: queues, egress pools, routes, connections, outcomes and retries.
        .target(name: "Delivery", dependencies: [
            "DNS", "DSN", "Events", "Kafka", "NodeHTTP", "Operations", "QueueRecord", "Reconciliation", "SMTPClient", "SMTPProtocol", "SmarthostConfig", "Spool", "Throttle",
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "HeapModule", package: "swift-collections"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        // The events topic: each step of a message's life as a JSON record.
        .target(name: "Events"),
        // Orphan sweep reports and the cluster ledger as pure state, and their JSON/table/CSV forms.
        .target(name: "Reconciliation", dependencies: ["Events"]),
        // The operator's view of the queues as pure state: filters, summaries, listings and the
        // cluster-wide merge, the diagnosis rules, and their tables (the admin API's wire types).
        .target(name: "Operations", dependencies: ["Reconciliation"]),
        // The reconciler process: the events topic into a durable ledger, checked against the spools.
        .target(name: "Reconciler", dependencies: [
            "Events", "Kafka", "NodeHTTP", "Reconciliation", "Throttle",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // SMTP over SwiftNIO: the connection handler and the listener.
        .target(name: "SMTPServer", dependencies: [
            "SMTPProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The ingress node: tenants, the Kafka sink, the listeners.
        .target(name: "Ingress", dependencies: [
            "Credentials", "Events", "Kafka", "NodeHTTP", "QueueRecord", "Redis", "SMTPProtocol", "SMTPServer", "SmarthostConfig", "Throttle",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Each node's HTTP endpoint: /health, /ready, /metrics, and the admin API behind a token.
        .target(name: "NodeHTTP", dependencies: [
            "Observability",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .target(name: "SmarthostConfig", dependencies: [
            "Credentials",
            .product(name: "Yams", package: "Yams"),
        ]),
        // SMTP AUTH secrets: scrypt password hashes (PHC strings) and the failed-login limiter.
        .target(name: "Credentials", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
        ]),
        .target(name: "Observability", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The orphan sweep's cost over a large spool (scripts/bench runs it).
        .executableTarget(name: "SweepBench", dependencies: [
            "Delivery", "Operations", "QueueRecord", "Reconciliation", "SMTPProtocol", "SmarthostConfig", "Spool",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // What both command-line tools share: the --config option, errors, JSON output.
        .target(name: "CommandSupport", dependencies: [
            "Reconciliation", "SmarthostConfig",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The operator's tool: every node of a running cluster through its admin API, merged.
        .executableTarget(name: "smarthostctl", dependencies: [
            "CommandSupport", "NodeHTTP", "Operations", "Reconciliation", "Redis", "SmarthostConfig", "Throttle",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "smarthost", dependencies: [
            "CommandSupport", "Credentials", "Delivery", "DNS", "QueueRecord", "Kafka", "Spool", "Redis", "SmarthostConfig", "Observability", "Ingress", "NodeHTTP",
            "Reconciler", "Reconciliation",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Starts real servers (Tansu, redis-server, ...) for tests; never used by the product.
        .target(name: "TestSupport", dependencies: [
            "Kafka", "Observability",
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "KafkaTests", dependencies: [
            "Kafka", "TestSupport",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "RedisTests", dependencies: [
            "Redis", "TestSupport",
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "ConfigTests", dependencies: ["SmarthostConfig", "Credentials"]),
        // The files of deploy/: manifests, compose file, units and Dockerfile checked, the shipped configurations loaded.
        .testTarget(name: "DeployTests", dependencies: [.product(name: "Yams", package: "Yams"), "SmarthostConfig"]),
        .testTarget(name: "CredentialsTests", dependencies: ["Credentials"]),
        .testTarget(name: "EventsTests", dependencies: ["Events"]),
        .testTarget(name: "DeliveryTests", dependencies: ["Delivery", "QueueRecord", "SMTPProtocol", "SmarthostConfig", "Spool", "Events", "DNS"]),
        .testTarget(name: "SpoolTests", dependencies: ["Spool", "QueueRecord", "SMTPProtocol"]),
        .testTarget(name: "SMTPClientTests", dependencies: [
            "SMTPClient", "SMTPProtocol", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .testTarget(name: "OperationsTests", dependencies: ["Operations"]),
        .testTarget(name: "ReconciliationTests", dependencies: ["Reconciliation", "Reconciler", "Events", "Kafka"]),
        .testTarget(name: "ThrottleTests", dependencies: ["Throttle", "Redis", "TestSupport"]),
        .testTarget(name: "NodeHTTPTests", dependencies: ["NodeHTTP", "TestSupport"]),
        .testTarget(name: "SMTPProtocolTests", dependencies: ["SMTPProtocol"]),
        .testTarget(name: "QueueRecordTests", dependencies: ["QueueRecord", "SMTPProtocol"]),
        .testTarget(name: "IngressTests", dependencies: ["Ingress", "Credentials", "Events", "Kafka", "Redis", "QueueRecord", "Throttle", "SMTPServer", "SMTPProtocol", "SmarthostConfig", "TestSupport"]),
        .testTarget(name: "SMTPServerTests", dependencies: [
            "SMTPServer", "SMTPProtocol", "TestSupport",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "ObservabilityTests", dependencies: ["Observability", "TestSupport"]),
        .testTarget(name: "DSNTests", dependencies: ["DSN", "TestSupport"]),
        .testTarget(name: "DNSTests", dependencies: ["DNS", "TestSupport"]),
        .testTarget(name: "TestSupportTests", dependencies: ["TestSupport"]),
        // Runs the built `smarthost` binary as an operator would.
        .testTarget(name: "SmarthostCLITests", dependencies: [
            "TestSupport", "Events", "Kafka", "NodeHTTP", "Operations", "QueueRecord", "Reconciliation", "SMTPProtocol",
        ]),
    ]
)
