import Foundation

/// Writes a report in its three forms (`<name>.json`, `.txt`, `.csv`), each replacing the
/// previous one atomically: a reader sees the old report or the new one, never half of one.
public enum ReportFiles {
    public static func write(_ report: ReconcileReport, named name: String, in directory: String) throws {
        try write(named: name, in: directory) { report.rendered(as: $0) }
    }

    public static func write(_ report: LedgerReport, named name: String, in directory: String) throws {
        try write(named: name, in: directory) { report.rendered(as: $0) }
    }

    private static func write(named name: String, in directory: String, _ render: (ReportFormat) -> String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for format in ReportFormat.allCases {
            let path = "\(directory)/\(name).\(format.fileExtension)"
            try Data(render(format).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        }
    }
}
