import Testing
import Kafka
import Logging

@Test func smokeRoundTrip() async throws {
    let mock = try KafkaMockCluster(brokers: 1)
    try mock.createTopic("smoke", partitions: 3)
    let kafka = KafkaConfiguration(bootstrapServers: mock.bootstrapServers)
    let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(kafka: kafka))
    var msgs: [KafkaProducerMessage] = []
    for i in 0..<100 {
        msgs.append(KafkaProducerMessage(topic: "smoke", key: "k\(i % 7)", value: i == 5 ? nil : "v\(i)", headers: [KafkaHeader(key: "h", value: "x\(i)")]))
    }
    let reports = await producer.send(msgs)
    #expect(reports.allSatisfy { $0.error == nil })
    let r = try await producer.send(KafkaProducerMessage(topic: "smoke", key: nil, value: ""))
    #expect(r.offset >= 0)
    await producer.shutdown()
    var cc = KafkaConsumerConfiguration(kafka: kafka, groupID: "g1")
    cc.sessionTimeout = .seconds(6)
    cc.heartbeatInterval = .seconds(1)
    let consumer = try KafkaConsumer(configuration: cc)
    try consumer.subscribe(topics: ["smoke"])
    var got: [KafkaMessage] = []
    for try await m in consumer.messages {
        got.append(m)
        try consumer.storeOffset(for: m)
        if got.count == 101 { break }
    }
    #expect(got.count == 101)
    #expect(got.contains { $0.value == nil })
    #expect(got.contains { $0.value == [] })
    #expect(got.first { $0.value != nil && $0.value != [] }?.header("h") != nil)
    try await consumer.commit()
    let lag = try await consumer.lag()
    #expect(lag.reduce(0) { $0 + $1.lag } == 0)
    await consumer.close()
    mock.shutdown()
}
