import Credentials
import Yams

/// The schema: which keys each section has, their types, defaults and bounds, and the checks across
/// sections. docs/configuration.md documents every key; keep the two in step.
extension SchemaReader {
    typealias Configuration = SmarthostConfiguration

    /// Named settings (pools, traffic classes, tenants) and the names declared, which other sections
    /// may refer to. `names` is nil when the section itself is unusable, so that references to it are
    /// not reported as well.
    struct Named<Value> {
        var values: [String: Value] = [:]
        var names: Set<String>? = []
    }

    static let sections = [
        "node", "kafka", "redis", "pools", "traffic_classes", "tenants", "routes", "delivery", "ingress", "limits",
        "dns", "response_rules", "shaping", "reconciliation", "testing",
    ]

    func configuration(_ root: Node?) -> SmarthostConfiguration? {
        let expected = "a map of sections (\(Self.sections.joined(separator: ", ")))"
        guard let root else {
            report(nil as TextPosition?, KeyPath(), "expected \(expected), got an empty file")
            return nil
        }
        guard let top = fields(root, KeyPath(), known: Self.sections, expected: expected) else { return nil }
        let node = required(top, "node").flatMap { nodeSettings($0, top.path("node")) }
        let kafka = required(top, "kafka").flatMap { kafkaSettings($0, top.path("kafka")) }
        let redis = required(top, "redis").flatMap { redisSettings($0, top.path("redis")) }
        let pools = top["pools"].map { self.pools($0, top.path("pools")) } ?? Named()
        let classes = trafficClasses(top["traffic_classes"], top.path("traffic_classes"))
        let tenants = required(top, "tenants").map {
            self.tenants($0, top.path("tenants"), pools: pools.names, classes: classes.names,
                         maxRecordSize: kafka?.maxRecordSize)
        }
        let routes = top["routes"].map { self.routes($0, top.path("routes")) } ?? []
        let delivery = top["delivery"].flatMap { self.delivery($0, top.path("delivery")) }
            ?? Configuration.DeliverySettings()
        let ingress = top["ingress"].flatMap { self.ingress($0, top.path("ingress")) } ?? Configuration.IngressSettings()
        let limits = top["limits"].map {
            self.limits($0, top.path("limits"), pools: pools.names, tenants: tenants?.names)
        } ?? []
        let dns = top["dns"].flatMap { self.dns($0, top.path("dns")) } ?? Configuration.DNSSettings()
        let responseRules = top["response_rules"].map { self.responseRules($0, top.path("response_rules")) } ?? []
        let shaping = top["shaping"].map { self.shapingRules($0, top.path("shaping")) } ?? []
        let reconciliation = top["reconciliation"].flatMap { self.reconciliation($0, top.path("reconciliation")) }
            ?? Configuration.ReconciliationSettings()
        let testing = top["testing"].flatMap { self.testing($0, top.path("testing")) } ?? Configuration.TestingSettings()
        guard diagnostics.isEmpty, let node, let kafka, let redis, let tenants else { return nil }
        return SmarthostConfiguration(node: node, kafka: kafka, redis: redis, pools: pools.values,
                                      trafficClasses: classes.values, tenants: tenants.values, routes: routes,
                                      delivery: delivery, ingress: ingress, limits: limits, dns: dns,
                                      responseRules: responseRules, shaping: shaping, reconciliation: reconciliation,
                                      testing: testing)
    }

    // MARK: node

    private func nodeSettings(_ node: Node, _ path: KeyPath) -> Configuration.NodeSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: ["id", "log_level", "log_format", "admin_listen", "spool_dir", "admin_token"])
        else { return nil }
        let id = required(fields, "id").flatMap {
            name($0, fields.path("id"), expected: "a node id matching [A-Za-z0-9._-]{1,64}", maximumLength: 64,
                 first: Names.isTopicCharacter, rest: Names.isTopicCharacter)
        }
        let logLevel: Configuration.LogLevel? = optional(fields, "log_level", choice)
        let logFormat: Configuration.LogFormat? = optional(fields, "log_format", choice)
        let adminListen = optional(fields, "admin_listen", hostPort)
        let spoolDirectory = optional(fields, "spool_dir") { absolutePath($0, $1, example: "/var/spool/smarthost") }
        let adminToken = optional(fields, "admin_token") {
            name($0, $1, expected: "a token of 16 to 256 printable ASCII characters without spaces", maximumLength: 256,
                 first: Self.isTokenCharacter, rest: Self.isTokenCharacter)
        }
        if let adminToken, adminToken.count < 16, let token = fields["admin_token"] {
            report(token, fields.path("admin_token"), "expected a token of 16 to 256 printable ASCII characters without spaces, got one of \(adminToken.count)")
        }
        guard diagnostics.count == before, let id else { return nil }
        var settings = Configuration.NodeSettings(id: id)
        settings.logLevel = logLevel ?? settings.logLevel
        settings.logFormat = logFormat ?? settings.logFormat
        settings.adminListen = adminListen ?? settings.adminListen
        settings.spoolDirectory = spoolDirectory ?? settings.spoolDirectory
        settings.adminToken = adminToken
        return settings
    }

    private static func isTokenCharacter(_ scalar: Unicode.Scalar) -> Bool { scalar.value > 0x20 && scalar.value < 0x7F }

    private func absolutePath(_ node: Node, _ path: KeyPath, example: String) -> String? {
        name(node, path, expected: "an absolute path such as \(example)", maximumLength: 1024,
             first: { $0 == "/" }, rest: { $0.value >= 0x20 && $0.value != 0x7F })
    }

    // MARK: reconciliation, testing

    private func reconciliation(_ node: Node, _ path: KeyPath) -> Configuration.ReconciliationSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: ["sweep_every", "orphan_grace", "unaccounted_after", "ledger_every",
                                                       "ledger_dir", "report_dir"])
        else { return nil }
        var settings = Configuration.ReconciliationSettings()
        settings.sweepEvery = optional(fields, "sweep_every") { duration($0, $1, .seconds(1) ... .seconds(86_400)) } ?? settings.sweepEvery
        settings.orphanGrace = optional(fields, "orphan_grace") { duration($0, $1, .seconds(1) ... .seconds(86_400)) } ?? settings.orphanGrace
        settings.unaccountedAfter = optional(fields, "unaccounted_after") { duration($0, $1, .seconds(1) ... .seconds(7 * 86_400)) }
            ?? settings.unaccountedAfter
        settings.ledgerEvery = optional(fields, "ledger_every") { duration($0, $1, .seconds(1) ... .seconds(3_600)) } ?? settings.ledgerEvery
        settings.ledgerDirectory = optional(fields, "ledger_dir") { absolutePath($0, $1, example: "/var/lib/smarthost/ledger") }
            ?? settings.ledgerDirectory
        settings.reportDirectory = optional(fields, "report_dir") { absolutePath($0, $1, example: "/var/lib/smarthost/reports") }
            ?? settings.reportDirectory
        return diagnostics.count == before ? settings : nil
    }

    private func testing(_ node: Node, _ path: KeyPath) -> Configuration.TestingSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: ["fault_injection"]) else { return nil }
        let faults = optional(fields, "fault_injection", boolean)
        return diagnostics.count == before ? Configuration.TestingSettings(faultInjection: faults ?? false) : nil
    }

    // MARK: kafka

    /// librdkafka properties that other settings set, or that the product's guarantees fix.
    static let managedClientOptions: [String: String] = [
        "bootstrap.servers": "is set from kafka.brokers; remove it here",
        "metadata.broker.list": "is set from kafka.brokers; remove it here",
        "group.id": "is set from kafka.consumer_group; remove it here",
        "session.timeout.ms": "is set from kafka.session_timeout; remove it here",
        "topic.metadata.refresh.interval.ms": "is set from kafka.metadata_refresh; remove it here",
        "message.timeout.ms": "is set from kafka.delivery_timeout; remove it here",
        "delivery.timeout.ms": "is set from kafka.delivery_timeout; remove it here",
        "message.max.bytes": "is set from kafka.max_record_size; remove it here",
        "acks": "cannot be changed: ingress nodes answer 250 only after all in-sync replicas have the message",
        "request.required.acks":
            "cannot be changed: ingress nodes answer 250 only after all in-sync replicas have the message",
        "enable.idempotence": "cannot be changed: the ingress producer must be idempotent",
        "enable.auto.commit":
            "cannot be changed: delivery nodes commit offsets only after the message is in their spool",
        "enable.auto.offset.store":
            "cannot be changed: delivery nodes commit offsets only after the message is in their spool",
    ]

    private func kafkaSettings(_ node: Node, _ path: KeyPath) -> Configuration.KafkaSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: [
            "brokers", "topic_prefix", "events_topic", "delivery_timeout", "max_in_flight", "max_record_size",
            "consumer_group", "session_timeout", "metadata_refresh", "client_options",
        ]) else { return nil }
        let brokers = required(fields, "brokers").flatMap { brokerList($0, fields.path("brokers")) }
        let prefix = optional(fields, "topic_prefix") {
            name($0, $1, expected: "a topic prefix matching [A-Za-z0-9._-]{1,200}", maximumLength: 200,
                 first: Names.isTopicCharacter, rest: Names.isTopicCharacter)
        }
        var settings = Configuration.KafkaSettings(brokers: brokers ?? [], topicPrefix: prefix ?? "smarthost")
        if let eventsNode = fields["events_topic"], let topic = name(
            eventsNode, fields.path("events_topic"), expected: "a topic name matching [A-Za-z0-9._-]{1,249}",
            maximumLength: 249, first: Names.isTopicCharacter, rest: Names.isTopicCharacter) {
            if fields["topic_prefix"] == nil || prefix != nil, topic.hasPrefix(settings.topicPrefix + ".") {
                report(eventsNode, fields.path("events_topic"),
                       "expected a topic name that does not start with \"\(settings.topicPrefix).\" (delivery nodes "
                       + "consume every topic matching \(settings.tenantTopicPattern)), got \(describe(eventsNode))")
            }
            settings.eventsTopic = topic
        }
        settings.deliveryTimeout = optional(fields, "delivery_timeout") {
            duration($0, $1, .seconds(1) ... .seconds(300))
        } ?? settings.deliveryTimeout
        settings.maxInFlight = optional(fields, "max_in_flight") { integer($0, $1, 1...1_000_000) }
            ?? settings.maxInFlight
        settings.maxRecordSize = optional(fields, "max_record_size") {
            byteSize($0, $1, .kibibytes(64) ... .gibibytes(1))
        } ?? settings.maxRecordSize
        settings.consumerGroup = optional(fields, "consumer_group") {
            name($0, $1, expected: "a consumer group matching [A-Za-z0-9._-]{1,249}", maximumLength: 249,
                 first: Names.isTopicCharacter, rest: Names.isTopicCharacter)
        } ?? settings.consumerGroup
        settings.sessionTimeout = optional(fields, "session_timeout") {
            duration($0, $1, .seconds(1) ... .seconds(300))
        } ?? settings.sessionTimeout
        settings.metadataRefresh = optional(fields, "metadata_refresh") {
            duration($0, $1, .seconds(1) ... .seconds(3_600))
        } ?? settings.metadataRefresh
        settings.clientOptions = optional(fields, "client_options", clientOptions) ?? [:]
        return diagnostics.count == before ? settings : nil
    }

    private func brokerList(_ node: Node, _ path: KeyPath) -> [HostPort]? {
        let expected = "a non-empty list of host:port addresses"
        guard let nodes = list(node, path, expected: expected) else { return nil }
        guard !nodes.isEmpty else {
            report(node, path, "expected \(expected), got an empty list")
            return nil
        }
        return nodes.enumerated().compactMap { index, element in hostPort(element, path[index]) }
    }

    private func clientOptions(_ node: Node, _ path: KeyPath) -> [String: String]? {
        guard let entries = entries(node, path, expected: "a map of librdkafka properties to strings") else {
            return nil
        }
        var options: [String: String] = [:]
        for entry in entries {
            guard Names.matches(entry.key, maximumLength: 128, first: Names.isTopicCharacter,
                                rest: Names.isTopicCharacter) else {
                report(entry.keyNode, entry.path,
                       "expected a librdkafka property name such as security.protocol, got \(describe(entry.keyNode))")
                continue
            }
            if let reason = Self.managedClientOptions[entry.key] {
                report(entry.keyNode, entry.path, reason)
                continue
            }
            options[entry.key] = text(entry.value, entry.path, expected: "a string")
        }
        return options
    }

    // MARK: redis

    private func redisSettings(_ node: Node, _ path: KeyPath) -> Configuration.RedisSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: [
            "address", "pool_size", "connect_timeout", "command_timeout", "key_prefix", "password", "database",
        ]) else { return nil }
        let address = required(fields, "address").flatMap { hostPort($0, fields.path("address")) }
        let poolSize = optional(fields, "pool_size") { integer($0, $1, 1...64) }
        let timeouts = Duration.milliseconds(10) ... .seconds(60)
        let connectTimeout = optional(fields, "connect_timeout") { duration($0, $1, timeouts) }
        let commandTimeout = optional(fields, "command_timeout") { duration($0, $1, timeouts) }
        let keyPrefix = optional(fields, "key_prefix") {
            let printable: (Unicode.Scalar) -> Bool = { (0x21...0x7E).contains($0.value) }
            return name($0, $1, expected: "a key prefix of 1 to 64 printable ASCII characters without spaces",
                        maximumLength: 64, first: printable, rest: printable)
        }
        let password = optional(fields, "password") { node, path in
            name(node, path, expected: "a non-empty password (leave the key out for none)", maximumLength: 1024,
                 first: { _ in true }, rest: { _ in true })
        }
        let database = optional(fields, "database") { integer($0, $1, 0...15) }
        guard diagnostics.count == before, let address else { return nil }
        var settings = Configuration.RedisSettings(address: address, password: password)
        settings.poolSize = poolSize ?? settings.poolSize
        settings.connectTimeout = connectTimeout ?? settings.connectTimeout
        settings.commandTimeout = commandTimeout ?? settings.commandTimeout
        settings.keyPrefix = keyPrefix ?? settings.keyPrefix
        settings.database = database ?? settings.database
        return settings
    }

    // MARK: pools, traffic classes, tenants

    private static func simpleName(_ kind: String) -> (String) throws(ValueError) -> String {
        { (text: String) throws(ValueError) -> String in
            guard Names.matches(text, maximumLength: 64, first: Names.isLowerAlphanumeric,
                                rest: Names.isLowerName) else {
                throw ValueError("expected a \(kind) name matching [a-z0-9][a-z0-9_-]{0,63}, "
                                 + "got \(Display.quoted(text))")
            }
            return text
        }
    }

    /// A map from names to settings read by `read`.
    private func named<Value>(_ node: Node, _ path: KeyPath, validName: (String) throws(ValueError) -> String,
                              _ read: (String, Node, KeyPath) -> Value?) -> Named<Value> {
        guard let entries = entries(node, path, expected: "a map of names to settings") else {
            return Named(names: nil)
        }
        var result = Named<Value>()
        for entry in entries {
            do {
                _ = try validName(entry.key)
            } catch {
                report(entry.keyNode, entry.path, error.message)
            }
            result.names?.insert(entry.key)
            result.values[entry.key] = read(entry.key, entry.value, entry.path)
        }
        return result
    }

    private func pools(_ node: Node, _ path: KeyPath) -> Named<Configuration.Pool> {
        named(node, path, validName: Self.simpleName("pool")) { name, node, path in
            guard let fields = fields(node, path, known: ["source_address", "ehlo_name"]) else { return nil }
            let sourceAddress = optional(fields, "source_address") {
                value($0, $1, expected: Expectation.ipAddress, ConfigSyntax.ipAddress)
            }
            let ehloName = required(fields, "ehlo_name").flatMap { domain($0, fields.path("ehlo_name")) }
            return ehloName.map { Configuration.Pool(name: name, sourceAddress: sourceAddress, ehloName: $0) }
        }
    }

    /// The built-in classes, overridden or joined by the file's.
    private func trafficClasses(_ node: Node?, _ path: KeyPath) -> Named<Configuration.TrafficClass> {
        var result = node.map { node in
            named(node, path, validName: Self.simpleName("traffic class")) { name, node, path in
                trafficClass(name, node, path)
            }
        } ?? Named()
        for (name, builtIn) in Configuration.TrafficClass.builtIn where result.names?.contains(name) != true {
            result.values[name] = builtIn
            result.names?.insert(name)
        }
        return result
    }

    private func trafficClass(_ name: String, _ node: Node, _ path: KeyPath) -> Configuration.TrafficClass? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: [
            "first_retry", "retry_multiplier", "max_retry_interval", "expiry",
        ]) else { return nil }
        var trafficClass = Configuration.TrafficClass.builtIn[name] ?? Configuration.TrafficClass(name: name)
        trafficClass.firstRetry = optional(fields, "first_retry") {
            duration($0, $1, .seconds(1) ... .seconds(86_400))
        } ?? trafficClass.firstRetry
        trafficClass.retryMultiplier = optional(fields, "retry_multiplier") { number($0, $1, 1.0...10.0) }
            ?? trafficClass.retryMultiplier
        trafficClass.maxRetryInterval = optional(fields, "max_retry_interval") {
            duration($0, $1, .seconds(1) ... .seconds(7 * 86_400))
        } ?? trafficClass.maxRetryInterval
        trafficClass.expiry = optional(fields, "expiry") {
            duration($0, $1, .seconds(1) ... .seconds(30 * 86_400))
        } ?? trafficClass.expiry
        guard diagnostics.count == before else { return nil }
        if trafficClass.maxRetryInterval < trafficClass.firstRetry {
            if let maximum = fields["max_retry_interval"] {
                report(maximum, fields.path("max_retry_interval"), "expected a duration of at least first_retry "
                       + "(\(ConfigSyntax.format(trafficClass.firstRetry))), got \(describe(maximum))")
            } else if let first = fields["first_retry"] {
                report(first, fields.path("first_retry"), "expected a duration of at most max_retry_interval "
                       + "(\(ConfigSyntax.format(trafficClass.maxRetryInterval))), got \(describe(first))")
            }
            return nil
        }
        return trafficClass
    }

    private func tenants(_ node: Node, _ path: KeyPath, pools: Set<String>?, classes: Set<String>?,
                         maxRecordSize: ByteSize?) -> Named<Configuration.Tenant> {
        var usernames: [String: KeyPath] = [:]
        let result = named(node, path, validName: ConfigSyntax.tenantName) { name, node, path in
            tenant(name, node, path, pools: pools, classes: classes, maxRecordSize: maxRecordSize, usernames: &usernames)
        }
        if result.names?.isEmpty == true {
            report(node, path, "expected at least one tenant, got \(describe(node))")
        }
        return result
    }

    private func tenant(_ name: String, _ node: Node, _ path: KeyPath, pools: Set<String>?, classes: Set<String>?,
                        maxRecordSize: ByteSize?, usernames: inout [String: KeyPath]) -> Configuration.Tenant? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: [
            "trusted_networks", "credentials", "sender_domains", "max_message_size", "max_recipients", "message_rate",
            "lane", "traffic_class", "pool",
        ]) else { return nil }
        var tenant = Configuration.Tenant(name: name)
        tenant.trustedNetworks = optional(fields, "trusted_networks") {
            elements($0, $1, expected: "a list of networks such as 10.0.0.0/8") {
                value($0, $1, expected: Expectation.network, CIDRNetwork.init(parsing:))
            }
        } ?? []
        tenant.credentials = optional(fields, "credentials") {
            elements($0, $1, expected: "a list of logins, each with username and password_hash") { node, path in
                credential(node, path, usernames: &usernames)
            }
        } ?? []
        tenant.senderDomains = optional(fields, "sender_domains") {
            elements($0, $1, expected: "a list of domain names", domain)
        } ?? []
        tenant.maxMessageSize = optional(fields, "max_message_size") {
            byteSize($0, $1, .kibibytes(1) ... .gibibytes(1))
        } ?? tenant.maxMessageSize
        tenant.maxRecipients = optional(fields, "max_recipients") { integer($0, $1, 1...10_000) }
            ?? tenant.maxRecipients
        tenant.messageRate = optional(fields, "message_rate", rate)
        tenant.lane = optional(fields, "lane", choice) ?? tenant.lane
        tenant.trafficClass = optional(fields, "traffic_class") {
            reference($0, $1, kind: "traffic class", section: "traffic_classes", names: classes)
        } ?? tenant.trafficClass
        tenant.pool = optional(fields, "pool") { reference($0, $1, kind: "pool", section: "pools", names: pools) }
        guard diagnostics.count == before else { return nil }
        if let maxRecordSize, tenant.maxMessageSize >= maxRecordSize {
            let got = fields["max_message_size"].map(describe) ?? "\(tenant.maxMessageSize) (the default)"
            report(fields["max_message_size"] ?? node, fields.path("max_message_size"),
                   "expected a byte size smaller than kafka.max_record_size (\(maxRecordSize)) because a message "
                   + "travels in one Kafka record with its envelope, got \(got)")
            return nil
        }
        return tenant
    }

    /// One SMTP AUTH login; a username belongs to one tenant only.
    private func credential(_ node: Node, _ path: KeyPath, usernames: inout [String: KeyPath]) -> Configuration.Credential? {
        guard let fields = fields(node, path, known: ["username", "password_hash"]) else { return nil }
        let usernameNode = required(fields, "username")
        let username = usernameNode.flatMap {
            name($0, fields.path("username"), expected: "a username of 1 to 128 characters from A-Z a-z 0-9 . _ @ + -",
                 maximumLength: 128, first: Names.isUsernameCharacter, rest: Names.isUsernameCharacter)
        }
        let hash = required(fields, "password_hash").flatMap {
            value($0, fields.path("password_hash"), expected: "a scrypt password hash") { text throws(ValueError) in
                do throws(PasswordHashError) { return try PasswordHash(parsing: text) } catch { throw ValueError(error.description) }
            }
        }
        guard let usernameNode, let username, let hash else { return nil }
        if let first = usernames[username] {
            report(usernameNode, fields.path("username"), "duplicate username: \"\(username)\" is already a login of \(first)")
            return nil
        }
        usernames[username] = path
        return Configuration.Credential(username: username, passwordHash: hash)
    }

    /// The name of one of `names`; any name when `names` is nil (the section is unusable and reported).
    private func reference(_ node: Node, _ path: KeyPath, kind: String, section: String,
                           names: Set<String>?) -> String? {
        let expected = "a \(kind) defined under \(section)"
        guard let text = text(node, path, expected: expected) else { return nil }
        guard let names, !names.contains(text) else { return text }
        let sorted = names.sorted()
        let defined = sorted.isEmpty ? "none are defined"
            : sorted.prefix(10).joined(separator: ", ") + (sorted.count > 10 ? ", …" : "")
        let hint = Suggestion.closest(to: text, among: sorted).map { " (did you mean \"\($0)\"?)" } ?? ""
        report(node, path, "expected \(expected) (\(defined)), got \(describe(node))\(hint)")
        return nil
    }

    // MARK: routes, delivery, limits

    private func routes(_ node: Node, _ path: KeyPath) -> [Configuration.Route] {
        guard let items = list(node, path, expected: "a list of routes") else { return [] }
        var routes: [Configuration.Route] = []
        var firstIndex: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            guard let fields = fields(item, path[index], known: ["domain", "next_hop", "require_tls"]) else { continue }
            let domainNode = required(fields, "domain")
            let domain = domainNode.flatMap { self.domain($0, fields.path("domain")) }
            let nextHop = required(fields, "next_hop").flatMap { hostPort($0, fields.path("next_hop")) }
            let requireTLS = optional(fields, "require_tls", boolean) ?? false
            guard let domainNode, let domain else { continue }
            if let first = firstIndex[domain] {
                report(domainNode, fields.path("domain"),
                       "duplicate route: \"\(domain)\" is already routed by \(path[first])")
                continue
            }
            firstIndex[domain] = index
            if let nextHop {
                routes.append(Configuration.Route(domain: domain, nextHop: nextHop, requireTLS: requireTLS))
            }
        }
        return routes
    }

    private func delivery(_ node: Node, _ path: KeyPath) -> Configuration.DeliverySettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: [
            "default_next_hop", "max_messages_per_connection", "max_connections_per_site", "ready_queue_size",
            "connect_timeout", "command_timeout", "tls", "event_log_max_size", "event_log_keep", "max_queued",
            "smtp_port", "send_dsn", "delay_notice_after", "default_response_rules",
        ]) else {
            return nil
        }
        var settings = Configuration.DeliverySettings()
        settings.defaultNextHop = optional(fields, "default_next_hop", hostPort)
        settings.maxMessagesPerConnection = optional(fields, "max_messages_per_connection") {
            integer($0, $1, 1...10_000)
        } ?? settings.maxMessagesPerConnection
        settings.maxConnectionsPerSite = optional(fields, "max_connections_per_site") { integer($0, $1, 1...1_000) }
            ?? settings.maxConnectionsPerSite
        settings.readyQueueSize = optional(fields, "ready_queue_size") { integer($0, $1, 1...100_000) }
            ?? settings.readyQueueSize
        settings.connectTimeout = optional(fields, "connect_timeout") { duration($0, $1, .milliseconds(100) ... .seconds(300)) }
            ?? settings.connectTimeout
        settings.commandTimeout = optional(fields, "command_timeout") { duration($0, $1, .milliseconds(100) ... .seconds(3_600)) }
            ?? settings.commandTimeout
        settings.tls = optional(fields, "tls", choice) ?? settings.tls
        settings.eventLogMaxSize = optional(fields, "event_log_max_size") {
            byteSize($0, $1, .kibibytes(64) ... .gibibytes(16))
        } ?? settings.eventLogMaxSize
        settings.eventLogKeep = optional(fields, "event_log_keep") { integer($0, $1, 1...1_000) } ?? settings.eventLogKeep
        settings.maxQueued = optional(fields, "max_queued") { integer($0, $1, 1_000...100_000_000) } ?? settings.maxQueued
        settings.smtpPort = optional(fields, "smtp_port") { integer($0, $1, 1...65_535) } ?? settings.smtpPort
        settings.sendDSN = optional(fields, "send_dsn", boolean) ?? settings.sendDSN
        settings.delayNoticeAfter = optional(fields, "delay_notice_after") {
            duration($0, $1, .seconds(1) ... .seconds(30 * 86_400))
        }
        settings.defaultResponseRules = optional(fields, "default_response_rules", boolean)
            ?? settings.defaultResponseRules
        return diagnostics.count == before ? settings : nil
    }

    // MARK: dns, response_rules

    private func dns(_ node: Node, _ path: KeyPath) -> Configuration.DNSSettings? {
        let before = diagnostics.count
        guard let fields = fields(node, path, known: ["resolvers", "timeout", "minimum_ttl", "maximum_ttl", "failure_ttl"])
        else { return nil }
        var settings = Configuration.DNSSettings()
        settings.resolvers = optional(fields, "resolvers") {
            elements($0, $1, expected: "a list of resolver addresses (host:port)", resolverAddress)
        } ?? settings.resolvers
        settings.timeout = optional(fields, "timeout") { duration($0, $1, .milliseconds(100) ... .seconds(60)) }
            ?? settings.timeout
        settings.minimumTTL = optional(fields, "minimum_ttl") { duration($0, $1, .seconds(1) ... .seconds(86_400)) }
            ?? settings.minimumTTL
        settings.maximumTTL = optional(fields, "maximum_ttl") { duration($0, $1, .seconds(1) ... .seconds(7 * 86_400)) }
            ?? settings.maximumTTL
        settings.failureTTL = optional(fields, "failure_ttl") { duration($0, $1, .seconds(1) ... .seconds(3_600)) }
            ?? settings.failureTTL
        if diagnostics.count == before, settings.minimumTTL > settings.maximumTTL {
            report(node, path, "expected minimum_ttl (\(ConfigSyntax.format(settings.minimumTTL))) to be at most "
                   + "maximum_ttl (\(ConfigSyntax.format(settings.maximumTTL)))")
        }
        return diagnostics.count == before ? settings : nil
    }

    /// A resolver is asked by address (libunbound forwards to addresses, not names): checked
    /// here, where the error can name the key, rather than when a delivery node starts.
    private func resolverAddress(_ node: Node, _ path: KeyPath) -> HostPort? {
        guard let address = hostPort(node, path) else { return nil }
        guard (try? ConfigSyntax.ipAddress(address.host)) != nil else {
            report(node, path, "expected a resolver's IP address and port such as 127.0.0.1:53 or [::1]:53, got \(describe(node))")
            return nil
        }
        return address
    }

    private func responseRules(_ node: Node, _ path: KeyPath) -> [Configuration.ResponseRule] {
        guard let items = list(node, path, expected: "a list of response rules") else { return [] }
        var rules: [Configuration.ResponseRule] = []
        var firstIndex: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            let before = diagnostics.count
            guard let fields = fields(item, path[index], known: ["name", "code", "enhanced", "text", "action", "delay"])
            else { continue }
            let name = ruleName(fields, index: index)
            let pattern = replyPattern(fields, item, path[index])
            let action: Configuration.ResponseRule.Action? = required(fields, "action").flatMap { choice($0, fields.path("action")) }
            let delay = optional(fields, "delay") { duration($0, $1, .seconds(1) ... .seconds(7 * 86_400)) }
            if let action {
                let needsDelay = action == .retryLater || action == .suspend
                if needsDelay && fields["delay"] == nil {
                    report(item, path[index], "action \(action.rawValue) needs a delay (how long to wait)")
                } else if !needsDelay, let delayNode = fields["delay"] {
                    report(delayNode, fields.path("delay"), "action \(action.rawValue) takes no delay; remove it")
                }
            }
            if let first = firstIndex[name], let nameNode = fields["name"] {
                report(nameNode, fields.path("name"), "duplicate rule name: \"\(name)\" is already used by \(path[first])")
            }
            guard diagnostics.count == before, let action, let pattern else { continue }
            firstIndex[name] = index
            rules.append(Configuration.ResponseRule(name: name, code: pattern.code, enhanced: pattern.enhanced, text: pattern.text,
                                                    action: action, delay: delay))
        }
        return rules
    }

    private func ingress(_ node: Node, _ path: KeyPath) -> Configuration.IngressSettings? {
        guard let fields = fields(node, path, known: ["hostname", "listeners", "auth_failure_limit", "auth_failure_window",
                                                            "command_timeout", "data_timeout", "shutdown_grace"])
        else { return nil }
        var settings = Configuration.IngressSettings()
        settings.hostname = optional(fields, "hostname", domain)
        settings.authFailureLimit = optional(fields, "auth_failure_limit") { integer($0, $1, 1...1000) }
            ?? settings.authFailureLimit
        settings.authFailureWindow = optional(fields, "auth_failure_window") {
            duration($0, $1, .seconds(1) ... .seconds(86_400))
        } ?? settings.authFailureWindow
        settings.commandTimeout = optional(fields, "command_timeout") {
            duration($0, $1, .seconds(1) ... .seconds(3_600))
        } ?? settings.commandTimeout
        settings.dataTimeout = optional(fields, "data_timeout") {
            duration($0, $1, .seconds(1) ... .seconds(3_600))
        } ?? settings.dataTimeout
        settings.shutdownGrace = optional(fields, "shutdown_grace") {
            duration($0, $1, .seconds(0) ... .seconds(3_600))
        } ?? settings.shutdownGrace
        guard let listenersNode = fields["listeners"] else { return settings }
        let listenersPath = fields.path("listeners")
        guard let items = list(listenersNode, listenersPath, expected: "a list of listeners") else { return nil }
        var seen: [HostPort: Int] = [:]
        for (index, item) in items.enumerated() {
            guard let listener = self.fields(item, listenersPath[index],
                                             known: ["address", "proxy_protocol", "certificate_file", "private_key_file", "implicit_tls",
                                                     "auth_over_plaintext", "require_auth"])
            else { continue }
            let addressNode = required(listener, "address")
            guard let addressNode, let address = hostPort(addressNode, listener.path("address")) else { continue }
            if let first = seen[address] {
                report(addressNode, listener.path("address"), "duplicate listener: \(address) is already used by \(listenersPath[first])")
                continue
            }
            seen[address] = index
            let certificate = optional(listener, "certificate_file") { text($0, $1, expected: "a file path") }
            let key = optional(listener, "private_key_file") { text($0, $1, expected: "a file path") }
            let implicitTLS = optional(listener, "implicit_tls", boolean) ?? false
            if (certificate == nil) != (key == nil) {
                report(item, listenersPath[index], "expected both certificate_file and private_key_file, or neither")
                continue
            }
            if implicitTLS && certificate == nil {
                report(item, listenersPath[index], "implicit_tls needs certificate_file and private_key_file")
                continue
            }
            let authOverPlaintext = optional(listener, "auth_over_plaintext", boolean) ?? false
            let requireAuth = optional(listener, "require_auth", boolean) ?? false
            if requireAuth && certificate == nil && !authOverPlaintext {
                report(item, listenersPath[index],
                       "require_auth needs certificate_file and private_key_file (AUTH is offered only inside TLS), or auth_over_plaintext")
                continue
            }
            settings.listeners.append(Configuration.Listener(
                address: address, proxyProtocol: optional(listener, "proxy_protocol", boolean) ?? false,
                certificateFile: certificate, privateKeyFile: key, implicitTLS: implicitTLS,
                authOverPlaintext: authOverPlaintext, requireAuth: requireAuth))
        }
        return settings
    }

    static let limitSelectors = ["pool", "site", "domain", "tenant"]
    static let limitKinds = [
        "max_connections", "max_message_rate", "max_messages_per_connection", "max_messages_per_hour",
        "max_messages_per_day",
    ]
    /// Limits on connections, which carry several tenants' mail: no tenant selector.
    static let connectionKinds = ["max_connections", "max_messages_per_connection"]

    private func limits(_ node: Node, _ path: KeyPath, pools: Set<String>?,
                        tenants: Set<String>?) -> [Configuration.Limit] {
        guard let items = list(node, path, expected: "a list of limits") else { return [] }
        var limits: [Configuration.Limit] = []
        var firstIndex: [Configuration.Limit.Scope: Int] = [:]
        for (index, item) in items.enumerated() {
            let before = diagnostics.count
            guard let fields = fields(item, path[index], known: Self.limitSelectors + Self.limitKinds + ["message_rate_burst"])
            else { continue }
            let scope = Configuration.Limit.Scope(
                pool: optional(fields, "pool") { wildcard($0) ?? reference($0, $1, kind: "pool", section: "pools", names: pools) },
                site: optional(fields, "site") { wildcard($0) ?? domain($0, $1) },
                domain: optional(fields, "domain") { wildcard($0) ?? domain($0, $1) },
                tenant: optional(fields, "tenant") {
                    wildcard($0) ?? reference($0, $1, kind: "tenant", section: "tenants", names: tenants)
                })
            let limit = Configuration.Limit(
                scope: scope,
                maxConnections: optional(fields, "max_connections") { integer($0, $1, 1...10_000) },
                maxMessageRate: optional(fields, "max_message_rate", rate),
                messageRateBurst: optional(fields, "message_rate_burst") { integer($0, $1, 1...1_000_000) },
                maxMessagesPerConnection: optional(fields, "max_messages_per_connection") {
                    integer($0, $1, 1...10_000)
                },
                maxMessagesPerHour: optional(fields, "max_messages_per_hour") { integer($0, $1, 1...1_000_000_000) },
                maxMessagesPerDay: optional(fields, "max_messages_per_day") { integer($0, $1, 1...1_000_000_000) })
            if !Self.limitSelectors.contains(where: { fields[$0] != nil }) {
                report(item, path[index], "expected at least one of pool, site, domain or tenant to select the traffic "
                       + "to limit, got none")
            }
            if !Self.limitKinds.contains(where: { fields[$0] != nil }) {
                report(item, path[index], "expected at least one of \(Self.limitKinds.joined(separator: ", ")), "
                       + "got none")
            }
            if let tenantNode = fields["tenant"], let kind = Self.connectionKinds.first(where: { fields[$0] != nil }) {
                report(tenantNode, fields.path("tenant"), "\(kind) cannot be limited per tenant (a connection carries "
                       + "several tenants' mail); put it in an entry without tenant")
            }
            if let burstNode = fields["message_rate_burst"], fields["max_message_rate"] == nil {
                report(burstNode, fields.path("message_rate_burst"), "message_rate_burst needs max_message_rate in the same entry")
            }
            guard diagnostics.count == before else { continue }
            if let first = firstIndex[scope] {
                report(item, path[index], "the same scope (\(scope)) as \(path[first]); merge the two entries")
                continue
            }
            firstIndex[scope] = index
            limits.append(limit)
        }
        return limits
    }

    /// `*` as a selector: one limit per value.
    private func wildcard(_ node: Node) -> String? {
        node.scalar?.string == "*" ? "*" : nil
    }

    // MARK: shaping

    private func shapingRules(_ node: Node, _ path: KeyPath) -> [Configuration.ShapingRule] {
        guard let items = list(node, path, expected: "a list of traffic shaping rules") else { return [] }
        var rules: [Configuration.ShapingRule] = []
        var firstIndex: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            let before = diagnostics.count
            guard let fields = fields(item, path[index], known: [
                "name", "code", "enhanced", "text", "threshold", "window", "action", "message_rate", "max_connections", "duration",
            ]) else { continue }
            let name = ruleName(fields, index: index)
            let pattern = replyPattern(fields, item, path[index])
            let threshold = optional(fields, "threshold") { integer($0, $1, 1...1_000_000) } ?? 1
            let window = optional(fields, "window") { duration($0, $1, .seconds(1) ... .seconds(86_400)) } ?? .seconds(3_600)
            let action: Configuration.ShapingRule.Action? = required(fields, "action").flatMap { choice($0, fields.path("action")) }
            let messageRate = optional(fields, "message_rate", rate)
            let maxConnections = optional(fields, "max_connections") { integer($0, $1, 0...10_000) }
            let lasting = required(fields, "duration").flatMap { duration($0, fields.path("duration"), .seconds(1) ... .seconds(7 * 86_400)) }
            if let action {
                for (key, needed) in [("message_rate", action == .messageRate), ("max_connections", action == .maxConnections)] {
                    if needed && fields[key] == nil {
                        report(item, path[index], "action \(action.rawValue) needs \(key)")
                    } else if !needed, let extra = fields[key] {
                        report(extra, fields.path(key), "action \(action.rawValue) takes no \(key); remove it")
                    }
                }
            }
            if let first = firstIndex[name], let nameNode = fields["name"] {
                report(nameNode, fields.path("name"), "duplicate rule name: \"\(name)\" is already used by \(path[first])")
            }
            guard diagnostics.count == before, let pattern, let action, let lasting else { continue }
            firstIndex[name] = index
            rules.append(Configuration.ShapingRule(name: name, pattern: pattern, threshold: threshold, window: window, action: action,
                                                   messageRate: messageRate, maxConnections: maxConnections, duration: lasting))
        }
        return rules
    }

    private func ruleName(_ fields: Fields, index: Int) -> String {
        optional(fields, "name") {
            self.name($0, $1, expected: "a rule name matching [A-Za-z0-9._-]{1,64}", maximumLength: 64,
                      first: Names.isTopicCharacter, rest: Names.isTopicCharacter)
        } ?? "rule-\(index + 1)"
    }

    /// `code`, `enhanced` and `text` of a response or shaping rule; at least one is required.
    private func replyPattern(_ fields: Fields, _ item: Node, _ path: KeyPath) -> Configuration.ReplyPattern? {
        let before = diagnostics.count
        let code = optional(fields, "code") {
            value($0, $1, expected: "a reply code such as 421 or 4xx") { text throws(ValueError) in
                guard let pattern = Configuration.CodePattern(text) else {
                    throw ValueError("expected a reply code such as 421 or 4xx (three characters, digits or x), got \(Display.quoted(text))")
                }
                return pattern
            }
        }
        let enhanced = optional(fields, "enhanced") {
            value($0, $1, expected: "an enhanced status code such as 4.7.28 or 4.7.*") { text throws(ValueError) in
                guard let pattern = Configuration.EnhancedCodePattern(text) else {
                    throw ValueError("expected an enhanced status code such as 4.7.28, 4.7.* or 4.7.65*, got \(Display.quoted(text))")
                }
                return pattern
            }
        }
        let text = optional(fields, "text") {
            value($0, $1, expected: "a regular expression", ConfigSyntax.regularExpression)
        }
        if fields["code"] == nil && fields["enhanced"] == nil && fields["text"] == nil {
            report(item, path, "expected at least one of code, enhanced or text to match replies, got none")
        }
        return diagnostics.count == before ? Configuration.ReplyPattern(code: code, enhanced: enhanced, text: text) : nil
    }

    // MARK: Helpers

    /// The value of an optional key, read by `read`; nil when the key is absent or its value is wrong.
    private func optional<T>(_ fields: Fields, _ key: String, _ read: (Node, KeyPath) -> T?) -> T? {
        fields[key].flatMap { read($0, fields.path(key)) }
    }
}
