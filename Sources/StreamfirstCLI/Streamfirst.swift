import ArgumentParser

@main
struct Streamfirst: AsyncParsableCommand {
    /// Every subcommand of `streamfirst`; add new ones here.
    static let subcommands: [any ParsableCommand.Type] = [
        BrokerCommand.self,
        BrokerCtlCommand.self,
        RegistryCommand.self,
        RunCommand.self,
        DemoCommand.self,
        CheckCommand.self,
        ProbeCommand.self,
        ClientDemoCommand.self,
        TailCommand.self,
        ProduceCommand.self,
        TopicsCommand.self,
        LagCommand.self,
        ConnectorsCommand.self,
        ReferenceCommand.self,
        ConformanceCommand.self,
        RedriveCommand.self,
        TestCommand.self,
        ChaosCommand.self,
        ReplayCommand.self,
        CompletionCommand.self,
    ]

    static let configuration = CommandConfiguration(
        commandName: "streamfirst",
        abstract: "Streamfirst: streaming pipelines on Apache Kafka.",
        subcommands: subcommands
    )
}
