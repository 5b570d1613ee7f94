import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

/// Collects a tail process's JSON lines: records and assignment events.
actor TailLog {
    var records: [String] = []  // "partition/offset/value"
    var assigned: [Int] = []  // partition count of each assignment
    var waiters: [(condition: @Sendable (TailLog) async -> Bool, continuation: CheckedContinuation<Void, Never>)] = []

    func add(_ line: String) async {
        guard let o = jsonObject(line) else { return }
        if o["event"] as? String == "assigned" {
            assigned.append((o["partitions"] as? [Any])?.count ?? 0)
        } else if let p = o["partition"] as? Int, let off = o["offset"] as? Int {
            records.append("\(p)/\(off)/\(o["value"] as? String ?? "")")
        }
        var still: [(condition: @Sendable (TailLog) async -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
        for w in waiters {
            if await w.condition(self) { w.continuation.resume() } else { still.append(w) }
        }
        waiters = still
    }

    func until(_ condition: @escaping @Sendable (TailLog) async -> Bool) async {
        if await condition(self) { return }
        await withCheckedContinuation { waiters.append((condition, $0)) }
    }

    func lastAssignment() -> Int? { assigned.last }
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
        let logA = TailLog()
        let logB = TailLog()
        let readA = Task { for await l in a.lines { await logA.add(l) } }
        let readB = Task { for await l in b.lines { await logB.add(l) } }

        // Both members hold two partitions each.
        await logA.until { await $0.lastAssignment() == 2 }
        await logB.until { await $0.lastAssignment() == 2 }

        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let first = await producer.send((0..<200).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 4), value: bytes("a\($0)")) })
        #expect(first.allSatisfy { $0.error == nil })
        await logA.until { _ in await logA.records.count + logB.records.count == 200 }
        let aBefore = await logA.records.count
        let bBefore = await logB.records.count
        #expect(aBefore > 0 && bBefore > 0, "both members consumed")

        // B dies without leaving the group; A must take over its partitions after the session timeout.
        b.kill()
        let second = await producer.send((200..<400).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 4), value: bytes("a\($0)")) })
        #expect(second.allSatisfy { $0.error == nil })
        await producer.shutdown()
        await logA.until { await $0.lastAssignment() == 4 }
        await logA.until { await $0.records.count - aBefore == 200 }

        let all = await logA.records + logB.records
        #expect(all.count == 400, "no record printed twice")
        #expect(Set(all.map { $0.split(separator: "/")[2] }) == Set((0..<400).map { "a\($0)" }), "no record lost")
        a.terminate()
        readA.cancel()
        readB.cancel()
        _ = try await broker.terminate()
    }
}
