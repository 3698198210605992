import Foundation
import Testing
import Yams

/// A systemd unit file as sections of key=value lines (a key may repeat).
struct UnitFile {
    var sections: [String: [(key: String, value: String)]] = [:]

    /// Parses the INI form systemd reads; throws naming the first line that is neither a
    /// comment, a section header nor a key=value assignment.
    init(text: String, file: String) throws {
        var section: String?
        var pending = ""
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = pending + raw.trimmingCharacters(in: .whitespaces)
            pending = ""
            if line.hasSuffix("\\") {
                line.removeLast()
                pending = line + " "
                continue
            }
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                sections[section!, default: []] += []
                continue
            }
            guard let section, let equals = line.firstIndex(of: "="), equals != line.startIndex else {
                throw DeployFileError("\(file):\(index + 1): expected [Section] or Key=value, got \(raw)")
            }
            sections[section, default: []].append((line[..<equals].trimmingCharacters(in: .whitespaces),
                                                    line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)))
        }
    }

    func values(_ key: String, in section: String = "Service") -> [String] {
        sections[section]?.filter { $0.key == key }.map(\.value) ?? []
    }

    func value(_ key: String, in section: String = "Service") -> String? { values(key, in: section).last }
}

@Suite("Deployment files (deploy/)")
struct DeployFileTests {
    @Test func everyYAMLFileUnderDeployParses() throws {
        let files = Deploy.files(under: "deploy", endingIn: [".yaml", ".yml"])
        for expected in [Compose.path, Kubernetes.folder + "/kustomization.yaml", Kubernetes.folder + "/delivery.yaml"] {
            #expect(files.contains(expected), "expected \(expected) among the YAML files under deploy/, found \(files)")
        }
        for file in files {
            do {
                let documents = try Deploy.documents(file)
                #expect(!documents.isEmpty, "\(file): no YAML document in it")
            } catch {
                Issue.record("\(file): YAML parse error: \(error)")
            }
        }
    }

    @Test func aParseErrorInALaterDocumentIsNotMissed() {
        #expect(throws: (any Error).self, "a broken second document should fail the parse") {
            try Deploy.documents(text: "kind: A\n---\nkind: [B\n")
        }
    }

    @Test func systemdUnitsRunARealSubcommandWithHardeningAndDrainTime() throws {
        let units = Deploy.files(under: "deploy/systemd", endingIn: [".service"])
        var roles: Set<String> = []
        for path in units {
            let text = try #require(Deploy.text(path))
            let unit = try UnitFile(text: text, file: path)
            for section in unit.sections.keys {
                #expect(["Unit", "Service", "Install"].contains(section), "\(path): unexpected section [\(section)]")
            }
            let start = (unit.value("ExecStart") ?? "").split(separator: " ").map(String.init)
            #expect(start.first?.hasSuffix("/smarthost") == true, "\(path): ExecStart should run smarthost, got \(start.joined(separator: " "))")
            let subcommand = start.count > 1 ? start[1] : ""
            #expect(try Deploy.isSubcommand(subcommand), "\(path): ExecStart runs \"\(subcommand)\", which is not a smarthost subcommand")
            roles.insert(subcommand)
            for pre in unit.values("ExecStartPre") where pre.hasPrefix("/usr/local/bin/smarthost ") {
                let words = pre.split(separator: " ").map(String.init)
                #expect(try Deploy.isSubcommand(words[1]), "\(path): ExecStartPre runs \"\(words[1])\", which is not a smarthost subcommand")
                #expect(Deploy.option("--config", in: words) == Deploy.option("--config", in: start),
                        "\(path): ExecStartPre checks another file than ExecStart runs with")
            }
            #expect(unit.value("User") != nil || unit.value("DynamicUser") == "yes", "\(path): runs as root (no User= or DynamicUser=yes)")
            #expect(unit.value("Restart") == "on-failure", "\(path): Restart should be on-failure")
            #expect(unit.value("LimitNOFILE").flatMap(Int.init) ?? 0 >= 16_384, "\(path): LimitNOFILE should be at least 16384")
            #expect(unit.value("NoNewPrivileges") == "yes" && unit.value("ProtectSystem") == "strict",
                    "\(path): NoNewPrivileges=yes and ProtectSystem=strict expected")
            let stop = Compose.seconds(unit.value("TimeoutStopSec") ?? "") ?? 0
            // Delivery: 30 s for open connections and 5 s for the outbox; ingress: shutdown_grace 30 s + flush 10 s.
            let drain = ["delivery": 36, "ingress": 40][subcommand] ?? 1
            #expect(stop >= drain, "\(path): TimeoutStopSec \(unit.value("TimeoutStopSec") ?? "missing") is below the \(drain) s the node needs to drain")
            // Only a delivery node reloads on SIGHUP (docs/configuration.md, Reload); it ends the others.
            let reload = unit.value("ExecReload")
            if subcommand == "delivery" {
                #expect(reload?.contains("-HUP") == true, "\(path): a delivery node reloads on SIGHUP; ExecReload should send it")
            } else {
                #expect(reload == nil, "\(path): smarthost \(subcommand) does not handle SIGHUP, which would stop it; remove ExecReload")
            }
            if subcommand == "delivery" || subcommand == "reconciler" {
                #expect(unit.value("StateDirectory") != nil, "\(path): the \(subcommand)'s data needs a StateDirectory")
            }
            #expect(unit.value("WantedBy", in: "Install") != nil, "\(path): no WantedBy= in [Install]")
        }
        #expect(roles == ["ingress", "delivery", "reconciler"], "deploy/systemd: expected one unit per role, found \(roles.sorted())")
    }

    @Test func theUnitParserRefusesWhatIsNotAnAssignment() {
        #expect(throws: DeployFileError.self) { try UnitFile(text: "[Service]\nExecStart /bin/true\n", file: "bad.service") }
        #expect(throws: DeployFileError.self) { try UnitFile(text: "User=nobody\n", file: "nosection.service") }
    }

    /// The Dockerfile's instructions, continuation lines joined.
    static func instructions(_ text: String) -> [(keyword: String, arguments: String)] {
        var result: [(String, String)] = []
        var current = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") { continue }
            if line.hasSuffix("\\") {
                current += line.dropLast() + " "
                continue
            }
            current += line
            let parts = current.split(separator: " ", maxSplits: 1).map(String.init)
            if let keyword = parts.first { result.append((keyword.uppercased(), parts.count > 1 ? parts[1] : "")) }
            current = ""
        }
        return result
    }

    @Test func theDockerfileBuildsAndShipsBothBinaries() throws {
        let path = "deploy/Dockerfile"
        let instructions = Self.instructions(try #require(Deploy.text(path), "\(path) is missing"))
        let stages = instructions.filter { $0.keyword == "FROM" }
        #expect(stages.count >= 2, "\(path): expected a build stage and a runtime stage, found \(stages.count) FROM")
        let lastFrom = instructions.lastIndex { $0.keyword == "FROM" } ?? 0
        let build = instructions[..<lastFrom]
        let runtime = instructions[lastFrom...]
        let builds = build.filter { $0.keyword == "RUN" }.map(\.arguments).joined(separator: " ")
        for product in ["smarthost", "smarthostctl"] {
            #expect(builds.contains("swift build -c release") && builds.contains("--product \(product) "),
                    "\(path): the build stage does not build the release product \(product)")
            #expect(runtime.contains { $0.keyword == "COPY" && $0.arguments.hasPrefix("--from=") && $0.arguments.split(separator: " ").contains { $0.hasSuffix("/\(product)") } },
                    "\(path): the runtime stage does not copy the \(product) binary from the build stage")
        }
        #expect(builds.contains("librdkafka") && runtime.contains { $0.keyword == "COPY" && $0.arguments.contains("librdkafka.so") },
                "\(path): librdkafka (2.2 or newer, built in the build stage) is not copied into the runtime stage")
        let arguments = instructions.filter { $0.keyword == "ARG" }.map(\.arguments).joined(separator: " ")
        #expect(arguments.contains("swift:6.") && arguments.contains("-bookworm") && arguments.contains("debian:bookworm-slim"),
                "\(path): expected a swift:6.x-bookworm builder and a debian:bookworm-slim runtime")
        let installs = runtime.filter { $0.keyword == "RUN" }.map(\.arguments).joined(separator: " ")
        for package in ["libhiredis", "libsqlite3", "libunbound", "ca-certificates"] {
            #expect(installs.contains(package), "\(path): the runtime stage does not install \(package)")
        }
        let user = runtime.last { $0.keyword == "USER" }?.arguments ?? "root"
        #expect(!["root", "0", "0:0"].contains(user), "\(path): the image runs as root")
        let exposed = Set(runtime.filter { $0.keyword == "EXPOSE" }.flatMap { $0.arguments.split(separator: " ").map(String.init) })
        let configuration = try Kubernetes.configuration(nodeID: "image", objects: Kubernetes.objects())
        for port in [configuration.node.adminListen.port] + configuration.ingress.listeners.map(\.address.port) {
            #expect(exposed.contains(String(port)), "\(path): port \(port) of the configuration is not EXPOSEd (\(exposed.sorted()))")
        }
        let entrypoint = runtime.last { $0.keyword == "ENTRYPOINT" }?.arguments ?? ""
        let copied = runtime.first { $0.keyword == "COPY" && $0.arguments.hasPrefix(Entrypoint.script + " ") }
        #expect(copied.map { entrypoint.contains($0.arguments.split(separator: " ").last ?? "-") } == true,
                "\(path): ENTRYPOINT \(entrypoint) should be \(Entrypoint.script) as copied into the image")
    }

    @Test func theBuildContextLeavesBuildOutputsOut() throws {
        let lines = Set(try #require(Deploy.text(".dockerignore"), ".dockerignore is missing").split(separator: "\n").map(String.init))
        for entry in [".build", ".tools", "cluster/run"] {
            #expect(lines.contains(entry), ".dockerignore does not exclude \(entry)")
        }
    }
}
