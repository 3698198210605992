import Foundation
import SmarthostConfig
import Testing
import Yams

/// deploy/compose/compose.yaml and the configuration it mounts.
enum Compose {
    static let folder = "deploy/compose"
    static let path = folder + "/compose.yaml"

    static func file() throws -> Node {
        let documents = try Deploy.documents(path)
        guard documents.count == 1 else { throw DeployFileError("\(path): expected one YAML document, found \(documents.count)") }
        return documents[0]
    }

    static func services(_ file: Node) -> [(name: String, service: Node)] {
        (file["services"]?.mapping ?? [:]).compactMap { key, value in key.string.map { ($0, value) } }.sorted { $0.name < $1.name }
    }

    /// A service's environment, from either of its forms (a map, or a list of NAME=value).
    static func environment(_ service: Node) -> [String: String] {
        if let list = service["environment"]?.sequence {
            var result: [String: String] = [:]
            for item in list.compactMap(\.string) {
                let parts = item.split(separator: "=", maxSplits: 1)
                result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
            }
            return result
        }
        return service["environment"]?.strings ?? [:]
    }

    /// A service's mounts as (source, target), from either of their forms.
    static func mounts(_ service: Node) -> [(source: String, target: String)] {
        service["volumes"]?.items.compactMap { volume in
            if let short = volume.string {
                let parts = short.split(separator: ":").map(String.init)
                return parts.count >= 2 ? (parts[0], parts[1]) : nil
            }
            guard let target = volume["target"]?.string else { return nil }
            return (volume["source"]?.string ?? "", target)
        } ?? []
    }

    /// Where a service's secret is mounted: /run/secrets/NAME unless the long form says otherwise.
    static func secretPaths(_ service: Node) -> [String: String] {
        var result: [String: String] = [:]
        for secret in service["secrets"]?.items ?? [] {
            if let name = secret.string ?? secret["source"]?.string {
                let target = secret["target"]?.string ?? name
                result[name] = target.hasPrefix("/") ? target : "/run/secrets/" + target
            }
        }
        return result
    }

    /// Whether a service runs the smarthost image, and which subcommand.
    static func subcommand(_ service: Node) -> String? {
        let image = service["image"]?.string ?? ""
        guard image.split(separator: "/").last.map({ $0.split(separator: ":")[0] == "smarthost" }) == true else { return nil }
        return service["command"]?.stringItems.first ?? ""
    }

    /// A compose duration such as 50s, 1m30s or 90s, in seconds.
    static func seconds(_ text: String) -> Int? {
        var total = 0
        var number = ""
        for character in text {
            if character.isNumber { number.append(character); continue }
            guard let value = Int(number) else { return nil }
            switch character {
            case "h": total += value * 3_600
            case "m": total += value * 60
            case "s": total += value
            default: return nil
            }
            number = ""
        }
        return number.isEmpty ? total : nil
    }

    /// The configuration the smarthost services mount, rendered for a node and loaded.
    static func configuration(nodeID: String) throws -> SmarthostConfiguration {
        let template = try templateSource()
        guard let text = Deploy.text(template) else { throw DeployFileError("\(template) (mounted by \(path)) cannot be read") }
        return try Deploy.renderAndLoad(template: text, origin: "\(template) (mounted by \(path))", nodeID: nodeID,
                                        nodeIP: "172.18.0.5").configuration
    }

    /// The repository path of the file mounted at the entrypoint's template path.
    static func templateSource() throws -> String {
        let sources = Set(services(try file()).filter { subcommand($0.service) != nil }.flatMap { name, service in
            mounts(service).filter { $0.target == (environment(service)["SMARTHOST_CONFIG_TEMPLATE"] ?? Entrypoint.templatePath) }.map(\.source)
        })
        guard sources.count == 1, let source = sources.first, source.hasPrefix("./") else {
            throw DeployFileError("\(path): the smarthost services should mount one file of \(folder) at \(Entrypoint.templatePath), found \(sources.sorted())")
        }
        return folder + "/" + source.dropFirst(2)
    }
}

@Suite("Docker Compose (deploy/compose)")
struct ComposeTests {
    @Test func servicesUseOnlyDefinedVolumesSecretsAndExistingFiles() throws {
        let file = try Compose.file()
        let volumes = Set((file["volumes"]?.mapping ?? [:]).compactMap { $0.key.string })
        let secrets = Set((file["secrets"]?.mapping ?? [:]).compactMap { $0.key.string })
        let services = Compose.services(file)
        #expect(services.count >= 5, "\(Compose.path): expected kafka, redis, ingress, delivery and reconciler, found \(services.map(\.name))")
        for (name, service) in services {
            #expect(service["image"]?.string != nil || service["build"] != nil, "\(Compose.path): service \(name) has neither image nor build")
            for (source, target) in Compose.mounts(service) {
                if source.hasPrefix(".") || source.hasPrefix("/") {
                    #expect(Deploy.exists(Compose.folder + "/" + source), "\(Compose.path): service \(name) mounts \(source), which does not exist")
                } else {
                    #expect(volumes.contains(source), "\(Compose.path): service \(name) mounts the volume \(source) at \(target), not defined under volumes")
                }
            }
            for secret in Compose.secretPaths(service).keys {
                #expect(secrets.contains(secret), "\(Compose.path): service \(name) uses the secret \(secret), not defined under secrets")
            }
            for dependency in (service["depends_on"]?.mapping ?? [:]).compactMap({ $0.key.string }) + (service["depends_on"]?.stringItems ?? []) {
                #expect(services.contains { $0.name == dependency }, "\(Compose.path): service \(name) depends on \(dependency), which is not a service")
            }
            if let build = service["build"] {
                let context = build.string ?? build["context"]?.string ?? "."
                let dockerfile = build["dockerfile"]?.string ?? "Dockerfile"
                let contextPath = URL(fileURLWithPath: repositoryRoot.appendingPathComponent(Compose.folder).appendingPathComponent(context).path)
                    .standardized.appendingPathComponent(dockerfile).path
                #expect(FileManager.default.fileExists(atPath: contextPath),
                        "\(Compose.path): service \(name) builds \(dockerfile) in \(context), which does not exist")
            }
        }
    }

    @Test func kafkaRunsInKRaftModeAndTakesWholeMessages() throws {
        let file = try Compose.file()
        let kafka = try #require(Compose.services(file).first { $0.name == "kafka" }?.service, "\(Compose.path): no kafka service")
        #expect(kafka["image"]?.string?.hasPrefix("apache/kafka:") == true, "\(Compose.path): kafka should run the apache/kafka image")
        let environment = Compose.environment(kafka)
        let roles = Set((environment["KAFKA_PROCESS_ROLES"] ?? "").split(separator: ",").map(String.init))
        #expect(roles == ["broker", "controller"], "\(Compose.path): KAFKA_PROCESS_ROLES should be broker,controller (one combined KRaft node), got \(roles)")
        let nodeID = environment["KAFKA_NODE_ID"] ?? "?"
        let voters = environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] ?? ""
        #expect(voters.hasPrefix("\(nodeID)@"), "\(Compose.path): KAFKA_CONTROLLER_QUORUM_VOTERS \(voters) should name node \(nodeID)")
        let controller = environment["KAFKA_CONTROLLER_LISTENER_NAMES"] ?? "?"
        #expect((environment["KAFKA_LISTENERS"] ?? "").contains("\(controller)://"),
                "\(Compose.path): KAFKA_LISTENERS has no listener for the controller (\(controller))")
        let clusterID = environment["CLUSTER_ID"] ?? ""
        let base64 = clusterID.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/") + "=="
        #expect(clusterID.count == 22 && Data(base64Encoded: base64)?.count == 16,
                "\(Compose.path): CLUSTER_ID \(clusterID) should be 16 bytes in URL-safe base64 (22 characters), as kafka-storage format wants")
        // The producer asks for max_record_size + 64 KiB (KafkaProducer's message.max.bytes).
        let needed = try Compose.configuration(nodeID: "ingress-1").kafka.maxRecordSize.bytes + 64 * 1_024
        for key in ["KAFKA_MESSAGE_MAX_BYTES", "KAFKA_REPLICA_FETCH_MAX_BYTES"] {
            let value = Int(environment[key] ?? "") ?? 0
            #expect(value >= needed, "\(Compose.path): \(key) \(value) is below kafka.max_record_size + 64KiB = \(needed)")
        }
    }

    @Test func theMountedConfigurationLoadsAndMatchesTheServices() throws {
        let file = try Compose.file()
        let services = Compose.services(file)
        let configuration = try Compose.configuration(nodeID: "delivery-1")
        let template = try Compose.templateSource()
        #expect(configuration.node.id == "delivery-1" && configuration.node.adminToken == Deploy.testToken,
                "\(template): node.id and node.admin_token should be the placeholders the entrypoint fills in")
        let names = Set(services.map(\.name))
        for broker in configuration.kafka.brokers {
            #expect(names.contains(broker.host), "kafka.brokers: \(broker) is not a service of \(Compose.path)")
        }
        #expect(names.contains(configuration.redis.address.host), "redis.address \(configuration.redis.address) is not a service of \(Compose.path)")
        var roles: Set<String> = []
        for (name, service) in services {
            guard let subcommand = Compose.subcommand(service) else { continue }
            roles.insert(subcommand)
            #expect(try Deploy.isSubcommand(subcommand), "\(Compose.path): service \(name) runs \"\(subcommand)\", not a smarthost subcommand")
            let environment = Compose.environment(service)
            let config = environment["SMARTHOST_CONFIG"] ?? Entrypoint.configPath
            #expect(Deploy.option("--config", in: service["command"]?.stringItems ?? []) == config,
                    "\(Compose.path): service \(name) should pass --config \(config), where the entrypoint writes the node's file")
            let token = environment["SMARTHOST_ADMIN_TOKEN_FILE"] ?? Entrypoint.tokenPath
            #expect(Compose.secretPaths(service).values.contains(token),
                    "\(Compose.path): service \(name) reads the admin token from \(token), where no secret of it is mounted")
            let targets = Compose.mounts(service).map(\.target)
            switch subcommand {
            case "delivery":
                #expect(targets.contains(configuration.node.spoolDirectory),
                        "\(Compose.path): service \(name) has no volume at node.spool_dir \(configuration.node.spoolDirectory)")
                #expect(environment["SMARTHOST_NODE_ID"] != nil, "\(Compose.path): service \(name) needs a fixed SMARTHOST_NODE_ID: its spool belongs to it")
                #expect(Compose.seconds(service["stop_grace_period"]?.string ?? "10s") ?? 0 > 35,
                        "\(Compose.path): service \(name)'s stop_grace_period does not cover the 30 s + 5 s drain")
            case "reconciler":
                #expect(targets.contains(configuration.reconciliation.ledgerDirectory),
                        "\(Compose.path): service \(name) has no volume at reconciliation.ledger_dir \(configuration.reconciliation.ledgerDirectory)")
            case "ingress":
                let published = service["ports"]?.items.compactMap { port in port.string?.split(separator: ":").last.map(String.init) ?? port["target"]?.string } ?? []
                let listeners = configuration.ingress.listeners.map { String($0.address.port) }
                #expect(!published.isEmpty && published.allSatisfy(listeners.contains),
                        "\(Compose.path): service \(name) publishes \(published), the listeners are on \(listeners)")
                let needed = Kubernetes.seconds(configuration.ingress.shutdownGrace) + Kubernetes.seconds(configuration.kafka.deliveryTimeout)
                #expect(Compose.seconds(service["stop_grace_period"]?.string ?? "10s") ?? 0 >= needed,
                        "\(Compose.path): service \(name)'s stop_grace_period is below ingress.shutdown_grace + kafka.delivery_timeout = \(needed) s")
            default:
                break
            }
        }
        #expect(roles.isSuperset(of: ["ingress", "delivery", "reconciler", "topics"]),
                "\(Compose.path): expected services running ingress, delivery, reconciler and topics, found \(roles.sorted())")
    }

    @Test func composeDurationsAreRead() {
        #expect(Compose.seconds("50s") == 50)
        #expect(Compose.seconds("1m30s") == 90)
        #expect(Compose.seconds("ten") == nil)
    }
}
