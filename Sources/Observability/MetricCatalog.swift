/// One metric a node exports: what Prometheus is told about it (`# HELP`, `# TYPE`), and for a
/// histogram its buckets. docs/metrics.md is the same list for people.
public struct MetricDescription: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public let name: String
    public let kind: Kind
    /// Label names, as the code sets them.
    public let labels: [String]
    public let help: String
    /// Upper bounds of a histogram's buckets; nil for the exporter's defaults (5 ms to 10 s).
    public let buckets: [Duration]?

    public init(_ name: String, _ kind: Kind, labels: [String] = [], buckets: [Duration]? = nil, _ help: String) {
        self.name = name
        self.kind = kind
        self.labels = labels
        self.help = help
        self.buckets = buckets
    }
}

/// Every metric of the code base, by name. swift-metrics has no place for help text, so the
/// metrics factory looks each metric up here when it is first created: a metric missing from
/// the catalogue is exported without `# HELP`, which `promtool check metrics` reports
/// (MetricsTests), and `MetricCatalogTests` checks that every name the sources use is here and
/// in docs/metrics.md.
public enum MetricCatalog {
    /// Redis answers in well under a millisecond on a healthy network.
    static let redisBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
    ]
    /// An acks=all acknowledgement takes a few milliseconds; `kafka.delivery_timeout` bounds it (10 s by default).
    static let kafkaAckBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    public static let all: [MetricDescription] = [
        // Kafka (every node)
        .init("smarthost_kafka_produce_ack_seconds", .histogram, buckets: kafkaAckBuckets,
              "Time from sending a record to Kafka's delivery report for it (acks=all), acknowledged or failed."),
        .init("smarthost_kafka_produced_total", .counter, labels: ["result"],
              "Records sent to Kafka by outcome: acknowledged, timed_out, failed (refused by Kafka), rejected (refused before sending)."),
        .init("smarthost_kafka_produce_errors_total", .counter, labels: ["reason"],
              "Records Kafka did not acknowledge, by librdkafka error name (e.g. _MSG_TIMED_OUT, MSG_SIZE_TOO_LARGE, NOT_ENOUGH_REPLICAS)."),
        .init("smarthost_kafka_producer_in_flight", .gauge,
              "Records sent to Kafka and not yet acknowledged or failed."),
        .init("smarthost_kafka_producer_replaced_total", .counter,
              "Kafka producer clients replaced after a fencing or fatal error."),
        .init("smarthost_kafka_errors_total", .counter, labels: ["role", "code"],
              "Errors librdkafka reported (broker connections, fetches, rebalances) by client role and librdkafka error name."),
        .init("smarthost_kafka_consumed_total", .counter,
              "Records the Kafka consumer handed to the node."),
        .init("smarthost_kafka_consumer_buffered", .gauge,
              "Records fetched from Kafka and not yet taken by the node (read-ahead buffer)."),
        .init("smarthost_kafka_consumer_lag", .gauge,
              "Records in this consumer's assigned partitions not yet done: high watermark minus the next offset to commit, summed."),
        .init("smarthost_kafka_consumer_offset_gaps_total", .counter,
              "Offsets a fetch answer skipped and that were still missing after fetching them again (records never delivered here)."),
        .init("smarthost_kafka_commit_errors_total", .counter,
              "Kafka offset commits that failed."),
        // Redis (every node)
        .init("smarthost_redis_command_seconds", .histogram, labels: ["command"], buckets: redisBuckets,
              "Time from sending a Redis command (or a pipeline, command=PIPELINE) to its reply or failure."),
        .init("smarthost_redis_errors_total", .counter, labels: ["kind"],
              "Redis errors the client saw: connection_failed, connection_closed, timeout, server (error replies), protocol, invalid_command."),
        // Spool (delivery nodes)
        .init("smarthost_spool_bytes", .gauge,
              "Size on disk of the spool: spool.sqlite plus its write-ahead log (updated every 10 s)."),
        .init("smarthost_spool_messages", .gauge,
              "Unfinished messages in the spool, as counted by the last orphan sweep."),
        // Delivery nodes
        .init("smarthost_delivery_recipients_total", .counter, labels: ["outcome"],
              "Recipient outcomes of delivery attempts: delivered, deferred, bounced, expired."),
        .init("smarthost_delivery_retries_total", .counter, labels: ["domain"],
              "Recipients deferred for another attempt, by destination domain (domains without a depth gauge as _other)."),
        .init("smarthost_delivery_bounces_total", .counter, labels: ["kind"],
              "Recipient failures by kind: hard (bounced) and soft (deferred for another attempt)."),
        .init("smarthost_queue_entries", .gauge, labels: ["state"],
              "Queue entries by state: scheduled, ready, in-flight, held, limbo."),
        .init("smarthost_queue_depth", .gauge, labels: ["tenant", "domain"],
              "Queued entries per tenant and destination domain (the deepest; the rest summed under domain _other)."),
        .init("smarthost_queue_oldest_age_seconds", .gauge, labels: ["tenant", "domain"],
              "Age of the oldest queued entry per tenant and destination domain."),
        .init("smarthost_queue_orphaned_messages", .gauge,
              "Spooled messages in no queue, as of the last queue view or sweep."),
        .init("smarthost_delivery_connections", .gauge,
              "Open outbound SMTP connections."),
        .init("smarthost_delivery_sites_suspended", .gauge,
              "Sites (pool and next hop) suspended by a response rule or an adjustment."),
        .init("smarthost_delivery_dsn_total", .counter,
              "Delivery status notifications queued to senders."),
        .init("smarthost_delivery_dsn_failures_total", .counter,
              "Delivery status notifications that could not be queued."),
        .init("smarthost_delivery_records_quarantined_total", .counter,
              "Kafka records that are not valid messages, kept in the spool's quarantine."),
        .init("smarthost_delivery_records_duplicate_total", .counter,
              "Kafka records of messages already spooled or finished (not queued again)."),
        .init("smarthost_events_publish_failures_total", .counter,
              "Events the delivery node could not hand to Kafka (they stay in the spool's outbox)."),
        .init("smarthost_reconcile_sweep_seconds", .gauge,
              "Duration of the last orphan sweep."),
        .init("smarthost_reconcile_orphans_total", .counter, labels: ["kind"],
              "Orphans the sweep found: in-no-queue (spooled, in no queue) and limbo (an outcome the spool could not record)."),
        // Throttle (delivery nodes)
        .init("smarthost_throttle_redis_up", .gauge,
              "1 while the cluster throttle reaches Redis, 0 while it applies local limits."),
        .init("smarthost_throttle_local_decisions_total", .counter,
              "Throttle decisions taken under local limits because Redis did not answer."),
        .init("smarthost_throttle_redis_errors_total", .counter,
              "Throttle calls to Redis that failed."),
        .init("smarthost_throttle_adjustments", .gauge,
              "Traffic shaping adjustments in force."),
        .init("smarthost_throttle_adjustments_unreadable", .gauge,
              "Entries of the adjustments in Redis that do not decode or cannot apply, ignored (smarthostctl throttle show names them)."),
        .init("smarthost_cluster_delivery_nodes", .gauge,
              "Live delivery nodes in the node registry, as last seen."),
        .init("smarthost_cluster_registry_unreadable", .gauge,
              "Node registry entries whose announcement does not decode, not counted as nodes (smarthostctl nodes names them)."),
        // Ingress nodes
        .init("smarthost_ingress_quota_decisions_total", .counter, labels: ["result"],
              "Tenant message-rate quota decisions: admitted, exceeded, unchecked (Redis did not answer)."),
        // Reconciler
        .init("smarthost_ledger_unaccounted_recipients", .gauge,
              "Recipients accepted with no terminal outcome and in no spool, past reconciliation.unaccounted_after."),
        .init("smarthost_ledger_queued_recipients", .gauge,
              "Recipients accepted and still queued in some spool, as of the last ledger check."),
        .init("smarthost_ledger_unspooled_records", .gauge,
              "Tenant-topic records below the delivery group's committed offsets with no Reception, past reconciliation.unaccounted_after."),
    ]

    private static let byName: [String: MetricDescription] = Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

    /// The description of the metric called `name`, if the catalogue has it.
    public static func description(of name: String) -> MetricDescription? {
        byName[name]
    }
}
