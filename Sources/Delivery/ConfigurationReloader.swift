import Logging
import ServiceLifecycle
import SmarthostConfig
import UnixSignals

/// Reloads the configuration file on SIGHUP and applies what can change without a restart
/// (limits and traffic shaping rules). A file that does not load is reported with every
/// error and changes nothing: the node goes on with what it had.
public struct ConfigurationReloader: Service {
    private let path: String
    private let manager: QueueManager
    private let logger: Logger

    public init(path: String, manager: QueueManager, logger: Logger = Logger(label: "smarthost.config")) {
        self.path = path
        self.manager = manager
        self.logger = logger
    }

    public func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in hangups { await reload() }
        }
    }

    func reload() async {
        do {
            let configuration = try SmarthostConfiguration.load(path: path)
            await manager.reload(configuration)
        } catch {
            logger.error("configuration not reloaded; the node keeps the one it had", metadata: ["error": "\(error.description)"])
        }
    }
}
