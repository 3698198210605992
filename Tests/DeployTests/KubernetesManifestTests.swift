import Foundation
import SmarthostConfig
import Testing
import Yams

/// One object of deploy/kubernetes.
struct KubernetesObject {
    let file: String
    let node: Node

    var kind: String { node["kind"]?.string ?? "" }
    var name: String { node[path: "metadata", "name"]?.string ?? "" }
    /// How messages name it: the file, the kind and the name.
    var place: String { "\(file): \(kind) \(name)" }

    static let workloadKinds: Set = ["Deployment", "StatefulSet", "DaemonSet", "Job"]
    var isWorkload: Bool { Self.workloadKinds.contains(kind) }
    var podLabels: [String: String] { node[path: "spec", "template", "metadata", "labels"]?.strings ?? [:] }
    var podSpec: Node? { node[path: "spec", "template", "spec"] }
    var containers: [Node] { (podSpec?["initContainers"]?.items ?? []) + (podSpec?["containers"]?.items ?? []) }
    var volumes: [Node] { podSpec?["volumes"]?.items ?? [] }

    /// The pod volume of that name.
    func volume(_ name: String) -> Node? { volumes.first { $0["name"]?.string == name } }
}

/// deploy/kubernetes, loaded once per test.
enum Kubernetes {
    static let folder = "deploy/kubernetes"

    static func objects() throws -> [KubernetesObject] {
        var objects: [KubernetesObject] = []
        for file in Deploy.files(under: folder, endingIn: [".yaml", ".yml"]) where !file.hasSuffix("/kustomization.yaml") {
            objects += try Deploy.documents(file).map { KubernetesObject(file: file, node: $0) }
        }
        return objects
    }

    static func kustomization() throws -> Node {
        guard let node = try Deploy.documents(folder + "/kustomization.yaml").first else {
            throw DeployFileError("\(folder)/kustomization.yaml is missing or empty")
        }
        return node
    }

    /// The keys of every Secret: those written in deploy/kubernetes and those the kustomization
    /// generates (secretGenerator: a file's name or KEY=file, a literal's KEY=value).
    static func secretKeys(_ objects: [KubernetesObject]) throws -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for secret in objects where secret.kind == "Secret" {
            let keys = ["data", "stringData"].flatMap { (secret.node[$0]?.mapping ?? [:]).compactMap(\.key.string) }
            result[secret.name, default: []].formUnion(keys)
        }
        for generator in try kustomization()["secretGenerator"]?.items ?? [] {
            guard let name = generator["name"]?.string else { continue }
            let files = generator["files"]?.stringItems.map { entry in
                entry.contains("=") ? String(entry.split(separator: "=")[0]) : URL(fileURLWithPath: entry).lastPathComponent
            } ?? []
            let literals = generator["literals"]?.stringItems.map { String($0.split(separator: "=")[0]) } ?? []
            result[name, default: []].formUnion(files + literals)
        }
        return result
    }

    /// Whether a container runs the smarthost image (any registry or tag).
    static func runsSmarthost(_ container: Node) -> Bool {
        let image = container["image"]?.string ?? ""
        let name = image.split(separator: "/").last.map { String($0.split(separator: ":")[0]) }
        return name == "smarthost"
    }

    /// The workloads that run smarthost, with the subcommand each runs.
    static func smarthostWorkloads(_ objects: [KubernetesObject]) -> [(object: KubernetesObject, container: Node, subcommand: String)] {
        objects.filter(\.isWorkload).flatMap { object in
            object.containers.filter(runsSmarthost).map { (object, $0, $0["args"]?.stringItems.first ?? "") }
        }
    }

    static func workload(running subcommand: String, kind: String, in objects: [KubernetesObject]) -> KubernetesObject? {
        smarthostWorkloads(objects).first { $0.subcommand == subcommand && $0.object.kind == kind }?.object
    }

    /// The configuration template of the ConfigMap the pods mount (its key is the entrypoint's
    /// template's name), and where it is.
    static func template(_ objects: [KubernetesObject]) throws -> (text: String, origin: String) {
        let key = URL(fileURLWithPath: Entrypoint.templatePath).lastPathComponent
        let maps = objects.filter { $0.kind == "ConfigMap" && $0.node[path: "data", key] != nil }
        guard maps.count == 1, let template = maps[0].node[path: "data", key]?.string else {
            throw DeployFileError("\(folder): expected one ConfigMap with the key \(key), found \(maps.map(\.place))")
        }
        return (template, "\(maps[0].place), data[\(key)]")
    }

    /// The ConfigMap's configuration, rendered for a node and loaded by the real loader.
    static func configuration(nodeID: String, objects: [KubernetesObject], nodeIP: String = "10.1.2.3") throws -> SmarthostConfiguration {
        try rendered(nodeID: nodeID, objects: objects, nodeIP: nodeIP).configuration
    }

    static func rendered(nodeID: String, objects: [KubernetesObject],
                         nodeIP: String = "10.1.2.3") throws -> (configuration: SmarthostConfiguration, text: String) {
        let template = try template(objects)
        return try Deploy.renderAndLoad(template: template.text, origin: template.origin, nodeID: nodeID, nodeIP: nodeIP)
    }

    /// The value of an environment variable a container sets literally.
    static func environment(_ name: String, of container: Node) -> String? {
        container["env"]?.items.first { $0["name"]?.string == name }?["value"]?.string
    }

    /// The mount of a container whose path is `path` or a folder above it.
    static func mount(holding path: String, in container: Node) -> Node? {
        container["volumeMounts"]?.items
            .filter { mount in
                guard let mountPath = mount["mountPath"]?.string else { return false }
                return path == mountPath || path.hasPrefix(mountPath.hasSuffix("/") ? mountPath : mountPath + "/")
            }
            .max { ($0["mountPath"]?.string ?? "").count < ($1["mountPath"]?.string ?? "").count }
    }

    /// Whether a probe's or a Service's port (a name or a number) is one the container declares.
    static func declares(_ port: Node?, _ container: Node) -> Bool {
        guard let port else { return false }
        return container["ports"]?.items.contains { declared in
            if let name = port.string, Int(name) == nil { return declared["name"]?.string == name }
            return declared["containerPort"]?.int == port.int
        } ?? false
    }

    /// The number of a container's port given by name or number.
    static func portNumber(_ port: Node?, _ container: Node) -> Int? {
        guard let port else { return nil }
        if let number = port.int { return number }
        return container["ports"]?.items.first { $0["name"]?.string == port.string }?["containerPort"]?.int
    }

    static func seconds(_ duration: Duration) -> Int { Int(duration.components.seconds) }
}

/// The image entrypoint's defaults (deploy/docker/entrypoint.sh), read from the script.
enum Entrypoint {
    static let script = "deploy/docker/entrypoint.sh"

    static func defaultValue(_ variable: String) -> String? {
        guard let text = Deploy.text(script), let start = text.range(of: "${\(variable):-") else { return nil }
        return text[start.upperBound...].split(separator: "}", maxSplits: 1).first.map(String.init)
    }

    static var templatePath: String { defaultValue("SMARTHOST_CONFIG_TEMPLATE") ?? "(no default in \(script))" }
    static var configPath: String { defaultValue("SMARTHOST_CONFIG") ?? "(no default in \(script))" }
    static var tokenPath: String { defaultValue("SMARTHOST_ADMIN_TOKEN_FILE") ?? "(no default in \(script))" }
}

@Suite("Kubernetes manifests (deploy/kubernetes)")
struct KubernetesManifestTests {
    @Test func everyObjectHasAnAPIVersionAKindAndAName() throws {
        let objects = try Kubernetes.objects()
        #expect(objects.count >= 10, "expected the namespace, ConfigMap, workloads and Services in \(Kubernetes.folder), found \(objects.count) objects")
        for object in objects {
            #expect(object.node["apiVersion"]?.string?.isEmpty == false, "\(object.place): no apiVersion")
            #expect(!object.kind.isEmpty, "\(object.file): an object without kind (name \(object.name))")
            #expect(!object.name.isEmpty, "\(object.file): a \(object.kind) without metadata.name")
        }
        let names = objects.map { "\($0.kind)/\($0.name)" }
        #expect(Set(names).count == names.count, "\(Kubernetes.folder): an object is defined twice: \(names.sorted())")
        for kind in ["Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "PersistentVolumeClaim"] {
            #expect(objects.contains { $0.kind == kind }, "\(Kubernetes.folder): no \(kind)")
        }
    }

    @Test func theKustomizationListsEveryManifestAndRetagsTheImage() throws {
        let path = Kubernetes.folder + "/kustomization.yaml"
        let kustomization = try Kubernetes.kustomization()
        let resources = Set(kustomization["resources"]?.stringItems ?? [])
        let manifests = Set(Deploy.files(under: Kubernetes.folder, endingIn: [".yaml", ".yml"])
            .map { String($0.dropFirst(Kubernetes.folder.count + 1)) }.filter { $0 != "kustomization.yaml" })
        #expect(resources == manifests, "\(path): resources \(resources.sorted()) should be exactly the manifests \(manifests.sorted())")
        let imageNames = kustomization["images"]?.items.compactMap { $0["name"]?.string } ?? []
        let used = Set(try Kubernetes.smarthostWorkloads(Kubernetes.objects()).compactMap { $0.container["image"]?.string }
            .map { String($0.split(separator: ":")[0]) })
        #expect(used.count == 1 && imageNames.contains(used.first ?? ""),
                "\(path): images[].name \(imageNames) should name the image the workloads use, \(used.sorted())")
    }

    @Test func workloadSelectorsMatchTheirPodLabels() throws {
        for object in try Kubernetes.objects() where object.isWorkload {
            #expect(!object.podLabels.isEmpty, "\(object.place): spec.template.metadata.labels is empty")
            if object.kind == "Job" { continue }  // a Job's selector is generated
            let selector = object.node[path: "spec", "selector", "matchLabels"]?.strings ?? [:]
            #expect(!selector.isEmpty, "\(object.place): spec.selector.matchLabels is empty")
            for (key, value) in selector {
                #expect(object.podLabels[key] == value,
                        "\(object.place): selector \(key)=\(value) does not match the pod template's labels \(object.podLabels)")
            }
        }
    }

    @Test func containersHaveAnImageResourcesAndProbesOnDeclaredPorts() throws {
        for object in try Kubernetes.objects() where object.isWorkload {
            for container in object.containers {
                let place = "\(object.place): container \(container["name"]?.string ?? "?")"
                #expect(container["image"]?.string?.isEmpty == false, "\(place): no image")
                for part in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        #expect(container[path: "resources", part, resource] != nil, "\(place): no resources.\(part).\(resource)")
                    }
                }
                guard object.kind != "Job" else { continue }  // runs once, nothing to probe
                for probe in ["readinessProbe", "livenessProbe"] {
                    guard let check = container[probe] else {
                        Issue.record("\(place): no \(probe)")
                        continue
                    }
                    if let port = check[path: "httpGet", "port"] ?? check[path: "tcpSocket", "port"] {
                        #expect(Kubernetes.declares(port, container),
                                "\(place): \(probe) uses port \(port.string ?? "?"), which is not among the container's ports")
                    } else {
                        #expect(check["exec"] != nil, "\(place): \(probe) has neither httpGet, tcpSocket nor exec")
                    }
                }
            }
        }
    }

    @Test func smarthostPodsProbeTheNodesRealEndpointsAndAreScraped() throws {
        let objects = try Kubernetes.objects()
        let configuration = try Kubernetes.configuration(nodeID: "probe-check", objects: objects)
        let server = try #require(Deploy.text("Sources/NodeHTTP/NodeHTTPServer.swift"), "Sources/NodeHTTP/NodeHTTPServer.swift is missing")
        let workloads = Kubernetes.smarthostWorkloads(objects).filter { $0.object.kind != "Job" }
        #expect(workloads.count >= 3, "expected ingress, delivery and reconciler workloads, found \(workloads.map(\.object.place))")
        for (object, container, _) in workloads {
            let place = "\(object.place): container \(container["name"]?.string ?? "?")"
            for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
                let used = container[path: probe, "httpGet", "path"]?.string
                #expect(used == path, "\(place): \(probe) should GET \(path), got \(used ?? "none")")
                #expect(server.contains("case \"\(used ?? path)\":"), "\(place): \(probe) path \(used ?? path) is not served by NodeHTTPServer")
                let port = Kubernetes.portNumber(container[path: probe, "httpGet", "port"], container)
                #expect(port == configuration.node.adminListen.port,
                        "\(place): \(probe) goes to port \(port.map(String.init) ?? "?"), node.admin_listen is \(configuration.node.adminListen)")
            }
            let annotations = object.node[path: "spec", "template", "metadata", "annotations"]?.strings ?? [:]
            #expect(annotations["prometheus.io/scrape"] == "true", "\(object.place): pod annotation prometheus.io/scrape is not \"true\"")
            #expect(annotations["prometheus.io/port"] == String(configuration.node.adminListen.port),
                    "\(object.place): prometheus.io/port \(annotations["prometheus.io/port"] ?? "missing") is not node.admin_listen's port")
            #expect(annotations["prometheus.io/path"] == "/metrics" && server.contains("case \"/metrics\":"),
                    "\(object.place): prometheus.io/path should be /metrics, got \(annotations["prometheus.io/path"] ?? "none")")
        }
    }

    @Test func smarthostContainersRunARealSubcommandOnTheRenderedConfiguration() throws {
        let objects = try Kubernetes.objects()
        for (object, container, subcommand) in Kubernetes.smarthostWorkloads(objects) {
            let place = "\(object.place): container \(container["name"]?.string ?? "?")"
            #expect(try Deploy.isSubcommand(subcommand), "\(place): args start with \"\(subcommand)\", which is not a smarthost subcommand")
            let arguments = container["args"]?.stringItems ?? []
            let config = Kubernetes.environment("SMARTHOST_CONFIG", of: container) ?? Entrypoint.configPath
            #expect(Deploy.option("--config", in: arguments) == config,
                    "\(place): --config should be \(config), where the entrypoint writes the node's file; args are \(arguments)")
            let configMount = Kubernetes.mount(holding: config, in: container)
            #expect(configMount.flatMap { object.volume($0["name"]?.string ?? "")?["emptyDir"] } != nil,
                    "\(place): \(config) is not on a writable emptyDir volume (the root filesystem is read-only)")
            let template = Kubernetes.environment("SMARTHOST_CONFIG_TEMPLATE", of: container) ?? Entrypoint.templatePath
            let templateMap = Kubernetes.mount(holding: template, in: container)
                .flatMap { object.volume($0["name"]?.string ?? "")?[path: "configMap", "name"]?.string }
            let templateKey = URL(fileURLWithPath: template).lastPathComponent
            #expect(objects.contains { $0.kind == "ConfigMap" && $0.name == templateMap && $0.node[path: "data", templateKey] != nil },
                    "\(place): \(template) should come from a ConfigMap with the key \(templateKey); mounted from \(templateMap ?? "nothing")")
            let token = Kubernetes.environment("SMARTHOST_ADMIN_TOKEN_FILE", of: container) ?? Entrypoint.tokenPath
            let tokenSecret = Kubernetes.mount(holding: token, in: container)
                .flatMap { object.volume($0["name"]?.string ?? "")?[path: "secret", "secretName"]?.string }
            let tokenKey = URL(fileURLWithPath: token).lastPathComponent
            #expect(try Kubernetes.secretKeys(objects)[tokenSecret ?? ""]?.contains(tokenKey) == true,
                    "\(place): \(token) should come from a Secret with the key \(tokenKey); mounted from \(tokenSecret ?? "nothing")")
        }
    }

    @Test func theDeliveryStatefulSetKeepsEachNodesSpoolAndDrains() throws {
        let objects = try Kubernetes.objects()
        let delivery = try #require(Kubernetes.workload(running: "delivery", kind: "StatefulSet", in: objects),
                                    "\(Kubernetes.folder): no StatefulSet runs smarthost delivery")
        let configuration = try Kubernetes.configuration(nodeID: "delivery-0", objects: objects)
        let claims = delivery.node[path: "spec", "volumeClaimTemplates"]?.items.compactMap { $0[path: "metadata", "name"]?.string } ?? []
        #expect(!claims.isEmpty, "\(delivery.place): no volumeClaimTemplates")
        let container = try #require(delivery.containers.first(where: Kubernetes.runsSmarthost))
        let spool = Kubernetes.mount(holding: configuration.node.spoolDirectory, in: container)
        #expect(spool?["mountPath"]?.string == configuration.node.spoolDirectory && claims.contains(spool?["name"]?.string ?? ""),
                "\(delivery.place): node.spool_dir \(configuration.node.spoolDirectory) should be the mount of a volumeClaimTemplate \(claims), is \(spool?["name"]?.string ?? "no volume")")
        let serviceName = delivery.node[path: "spec", "serviceName"]?.string ?? ""
        let service = objects.first { $0.kind == "Service" && $0.name == serviceName }
        #expect(service?.node[path: "spec", "clusterIP"]?.string == "None",
                "\(delivery.place): serviceName \(serviceName) should name a headless Service (clusterIP: None) in \(Kubernetes.folder)")
        // DeliveryNode: open connections get 30 s to finish, the outbox 5 s more, then the consumer commits.
        let grace = delivery.podSpec?["terminationGracePeriodSeconds"]?.int ?? 30
        #expect(grace > 35, "\(delivery.place): terminationGracePeriodSeconds \(grace) leaves no time to commit after the 30 s + 5 s drain")
        let budgets = objects.filter { $0.kind == "PodDisruptionBudget" }.filter { budget in
            let selector = budget.node[path: "spec", "selector", "matchLabels"]?.strings ?? [:]
            return !selector.isEmpty && selector.allSatisfy { delivery.podLabels[$0.key] == $0.value }
        }
        #expect(budgets.count == 1, "\(Kubernetes.folder): expected one PodDisruptionBudget selecting the delivery pods, found \(budgets.map(\.place))")
    }

    @Test func oneReconcilerRunsWithItsLedgerOnAPersistentVolume() throws {
        let objects = try Kubernetes.objects()
        let reconciler = try #require(Kubernetes.workload(running: "reconciler", kind: "Deployment", in: objects),
                                      "\(Kubernetes.folder): no Deployment runs smarthost reconciler")
        #expect(reconciler.node[path: "spec", "replicas"]?.int == 1, "\(reconciler.place): replicas should be 1 (one ledger)")
        #expect(reconciler.node[path: "spec", "strategy", "type"]?.string == "Recreate",
                "\(reconciler.place): strategy should be Recreate, so that two reconcilers never share the ledger")
        let configuration = try Kubernetes.configuration(nodeID: "reconciler", objects: objects)
        let ledger = configuration.reconciliation.ledgerDirectory
        let container = try #require(reconciler.containers.first(where: Kubernetes.runsSmarthost))
        let mount = Kubernetes.mount(holding: ledger, in: container)
        let claim = mount.flatMap { reconciler.volume($0["name"]?.string ?? "")?[path: "persistentVolumeClaim", "claimName"]?.string }
        #expect(mount?["mountPath"]?.string == ledger && claim != nil,
                "\(reconciler.place): reconciliation.ledger_dir \(ledger) should be the mount of a persistentVolumeClaim volume")
        #expect(objects.contains { $0.kind == "PersistentVolumeClaim" && $0.name == claim },
                "\(reconciler.place): the PersistentVolumeClaim \(claim ?? "?") is not in \(Kubernetes.folder)")
    }

    @Test func ingressPodsDrainWithinTheirGraceAndReceiveSMTPOnTheListener() throws {
        let objects = try Kubernetes.objects()
        let ingress = try #require(Kubernetes.workload(running: "ingress", kind: "Deployment", in: objects),
                                   "\(Kubernetes.folder): no Deployment runs smarthost ingress")
        let configuration = try Kubernetes.configuration(nodeID: "ingress-check", objects: objects)
        let container = try #require(ingress.containers.first(where: Kubernetes.runsSmarthost))
        let pause = Int(container[path: "lifecycle", "preStop", "exec", "command"]?.stringItems.last ?? "") ?? 0
        let needed = Kubernetes.seconds(configuration.ingress.shutdownGrace) + Kubernetes.seconds(configuration.kafka.deliveryTimeout) + pause
        let grace = ingress.podSpec?["terminationGracePeriodSeconds"]?.int ?? 30
        #expect(grace >= needed,
                "\(ingress.place): terminationGracePeriodSeconds \(grace) < preStop \(pause) s + ingress.shutdown_grace + kafka.delivery_timeout = \(needed) s")
        let listenerPorts = Set(configuration.ingress.listeners.map(\.address.port))
        #expect(!listenerPorts.isEmpty, "the ConfigMap's configuration has no ingress.listeners")
        let smtpServices = objects.filter { service in
            service.kind == "Service" && service.node[path: "spec", "ports"]?.items.contains { $0["port"]?.int == 25 } == true
        }
        #expect(!smtpServices.isEmpty, "\(Kubernetes.folder): no Service offers port 25")
        for service in smtpServices {
            for port in service.node[path: "spec", "ports"]?.items ?? [] {
                let target = Kubernetes.portNumber(port["targetPort"] ?? port["port"], container)
                #expect(target.map(listenerPorts.contains) == true,
                        "\(service.place): targetPort \(target.map(String.init) ?? "?") is not an ingress listener's port \(listenerPorts.sorted())")
            }
        }
    }

    @Test func everyServiceSelectsAWorkloadAndTargetsADeclaredPort() throws {
        let objects = try Kubernetes.objects()
        let workloads = objects.filter(\.isWorkload)
        for service in objects where service.kind == "Service" {
            let selector = service.node[path: "spec", "selector"]?.strings ?? [:]
            let selected = workloads.filter { workload in selector.allSatisfy { workload.podLabels[$0.key] == $0.value } }
            #expect(!selector.isEmpty && !selected.isEmpty, "\(service.place): selector \(selector) matches no workload's pod labels")
            for port in service.node[path: "spec", "ports"]?.items ?? [] {
                let target = port["targetPort"] ?? port["port"]
                #expect(selected.contains { $0.containers.contains { Kubernetes.declares(target, $0) } },
                        "\(service.place): targetPort \(target?.string ?? "?") is not a port of the selected pods")
            }
        }
    }

    @Test func everyConfigMapAndSecretAWorkloadUsesExists() throws {
        let objects = try Kubernetes.objects()
        let defined = Set(objects.filter { $0.kind == "ConfigMap" }.map { "ConfigMap/\($0.name)" }
            + (try Kubernetes.secretKeys(objects).keys.map { "Secret/\($0)" }))
        for object in objects where object.isWorkload {
            var used: [String] = []
            for volume in object.volumes {
                if let name = volume[path: "configMap", "name"]?.string { used.append("ConfigMap/\(name)") }
                if let name = volume[path: "secret", "secretName"]?.string { used.append("Secret/\(name)") }
                for source in volume[path: "projected", "sources"]?.items ?? [] {
                    if let name = source[path: "configMap", "name"]?.string { used.append("ConfigMap/\(name)") }
                    if let name = source[path: "secret", "name"]?.string { used.append("Secret/\(name)") }
                }
            }
            for container in object.containers {
                for variable in container["env"]?.items ?? [] {
                    if let name = variable[path: "valueFrom", "configMapKeyRef", "name"]?.string { used.append("ConfigMap/\(name)") }
                    if let name = variable[path: "valueFrom", "secretKeyRef", "name"]?.string { used.append("Secret/\(name)") }
                }
                for source in container["envFrom"]?.items ?? [] {
                    if let name = source[path: "configMapRef", "name"]?.string { used.append("ConfigMap/\(name)") }
                    if let name = source[path: "secretRef", "name"]?.string { used.append("Secret/\(name)") }
                }
            }
            for reference in used {
                #expect(defined.contains(reference), "\(object.place): uses \(reference), which is neither in \(Kubernetes.folder) nor generated by its kustomization")
            }
        }
    }

    @Test func theConfigMapsConfigurationLoadsForEveryNode() throws {
        let objects = try Kubernetes.objects()
        for nodeID in ["delivery-0", "smarthost-ingress-5d8f7c9b6-x2x7q", "reconciler"] {
            let configuration = try Kubernetes.configuration(nodeID: nodeID, objects: objects)
            #expect(configuration.node.id == nodeID, "the ConfigMap's node.id should be the pod's name, got \(configuration.node.id)")
            #expect(configuration.node.adminToken == Deploy.testToken, "the ConfigMap's node.admin_token should come from the Secret")
            #expect(configuration.node.adminListen.host == "10.1.2.3", "node.admin_listen should be the pod's IP, got \(configuration.node.adminListen)")
            #expect(configuration.testing.faultInjection == false, "the ConfigMap's configuration turns on testing.fault_injection")
        }
        let configuration = try Kubernetes.configuration(nodeID: "delivery-0", objects: objects)
        let namespace = objects.first { $0.kind == "Namespace" }?.name ?? "?"
        let services = Set(objects.filter { $0.kind == "Service" }.map(\.name))
        let redis = configuration.redis.address.host
        #expect(services.contains(where: { redis == "\($0).\(namespace).svc.cluster.local" }),
                "redis.address \(redis) should be a Service of \(Kubernetes.folder) by its in-cluster name")
        for broker in configuration.kafka.brokers {
            #expect(broker.host.hasSuffix(".svc.cluster.local"), "kafka.brokers: \(broker) is not an in-cluster Service name")
        }
        let (_, text) = try Kubernetes.rendered(nodeID: "delivery-0", objects: objects, nodeIP: "fd00::5")
        #expect(text.contains("\"[fd00::5]:8025\""), "an IPv6 pod address should be written in brackets in node.admin_listen")
        #expect(!text.contains("@NODE_") && !text.contains("@ADMIN_TOKEN@"), "a placeholder is left in the rendered configuration")
    }
}
