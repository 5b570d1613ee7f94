import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

/// Collects the JSON lines of several tail processes: records and assignment events, per process.
actor TailLog {
    var records: [String: [String]] = [:] // process → "partition/offset/value"
    var assigned: [String: [Int]] = [:] // process → partition count of each assignment
    private var waiters: [(id: Int, condition: @Sendable (isolated TailLog) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
    private var nextID = 0

    func add(_ line: String, from process: String) {
        guard let o = jsonObject(line) else { return }
        if o["event"] as? String == "assigned" {
            assigned[process, default: []].append((o["partitions"] as? [Any])?.count ?? 0)
        } else if let p = o["partition"] as? Int, let off = o["offset"] as? Int {
            records[process, default: []].append("\(p)/\(off)/\(o["value"] as? String ?? "")")
        }
        let ready = waiters.filter { $0.condition(self) }
        waiters.removeAll { w in ready.contains { $0.id == w.id } }
        for w in ready { w.continuation.resume() }
    }

    /// Waits until `condition` holds (re-checked on every line); gives up when the task is cancelled.
    func until(_ condition: @escaping @Sendable (isolated TailLog) -> Bool) async {
        if condition(self) { return }
        nextID += 1
        let id = nextID
        await withTaskCancellationHandler {
            await withCheckedContinuation { waiters.append((id, condition, $0)) }
        } onCancel: {
            Task { await self.cancel(id) }
        }
    }

    private func cancel(_ id: Int) {
        if let i = waiters.firstIndex(where: { $0.id == id }) { waiters.remove(at: i).continuation.resume() }
    }

    func count(_ process: String) -> Int { records[process]?.count ?? 0 }
    func lastAssignment(_ process: String) -> Int? { assigned[process]?.last }
}

@Suite("Consumer groups across processes", .serialized, .timeLimit(.minutes(3)))
struct GroupProcessTests {
    @Test("two consumer processes split the partitions; after SIGKILL of one, the other takes over from committed offsets with no loss")
    func splitAndTakeOver() async throws {
        let topic = uniqueName("grp")
        let group = uniqueName("g")
        let broker = try await launchBroker(topics: [topic: 4])
        let exe = try streamfirstExecutable()
        let args = [
            "tail", topic, "--bootstrap", broker.bootstrapServers, "--group", group, "--commit", "sync", "--json",
            "--session-timeout-ms", "6000",
        ]
        let a = try LineProcess(exe, args)
        let b = try LineProcess(exe, args)
        let log = TailLog()
        let readA = Task { for await l in a.lines { await log.add(l, from: "a") } }
        let readB = Task { for await l in b.lines { await log.add(l, from: "b") } }

        // Both members hold two partitions each.
        await log.until { $0.lastAssignment("a") == 2 && $0.lastAssignment("b") == 2 }

        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let first = await producer.send(
            (0..<200).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 4), value: bytes("a\($0)")) })
        #expect(first.allSatisfy { $0.error == nil })
        await log.until { $0.count("a") + $0.count("b") == 200 }
        let aBefore = await log.count("a")
        let bBefore = await log.count("b")
        #expect(aBefore > 0 && bBefore > 0, "both members consumed")

        // B dies without leaving the group; A must take over its partitions after the session timeout.
        await b.kill()
        let second = await producer.send(
            (200..<400).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 4), value: bytes("a\($0)")) })
        #expect(second.allSatisfy { $0.error == nil })
        await producer.shutdown()
        await log.until { $0.lastAssignment("a") == 4 }
        await log.until { $0.count("a") - aBefore >= 200 }

        let all = await (log.records["a"] ?? []) + (log.records["b"] ?? [])
        #expect(all.count == 400, "no record printed twice")
        #expect(Set(all.map { $0.split(separator: "/")[2] }) == Set((0..<400).map { "a\($0)" }), "no record lost")
        await a.terminate()
        readA.cancel()
        readB.cancel()
        _ = try await broker.terminate()
    }
}
