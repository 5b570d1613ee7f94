import ArgumentParser
import Connectors

struct ConnectorsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connectors",
        abstract: "Print the reference of every source and sink with its settings (Markdown, as in docs/CONNECTORS.md).")

    func run() throws {
        print(ConnectorDocs.markdown(), terminator: "")
    }
}
