import Foundation
import Testing

@testable import Kafka

@Suite("Configuration")
struct ConfigurationTests {
    let kafka = KafkaConfiguration(bootstrapServers: "127.0.0.1:9", clientID: "c")

    @Test("producer defaults hand librdkafka exactly these properties")
    func producerDictionary() {
        let p = KafkaProducerConfiguration(kafka: kafka).librdkafkaProperties()
        #expect(
            p == [
                "bootstrap.servers": "127.0.0.1:9", "client.id": "c", "security.protocol": "plaintext",
                "enable.idempotence": "true", "acks": "all", "linger.ms": "5", "compression.codec": "none",
                "message.timeout.ms": "300000", "queue.buffering.max.messages": "100000",
                "queue.buffering.max.kbytes": "1048576",
            ])
    }

    @Test("consumer defaults: eager assignor, manual offset store, auto-commit of stored offsets")
    func consumerDictionary() {
        let p = KafkaConsumerConfiguration(kafka: kafka, groupID: "g").librdkafkaProperties()
        #expect(
            p == [
                "bootstrap.servers": "127.0.0.1:9", "client.id": "c", "security.protocol": "plaintext", "group.id": "g",
                "auto.offset.reset": "earliest", "session.timeout.ms": "45000", "heartbeat.interval.ms": "3000",
                "max.poll.interval.ms": "300000", "partition.assignment.strategy": "range", "enable.auto.commit": "true",
                "auto.commit.interval.ms": "5000", "enable.auto.offset.store": "false", "fetch.wait.max.ms": "500",
                "isolation.level": "read_committed", "enable.partition.eof": "false",
            ])
    }

    @Test("raw properties pass through and override typed ones")
    func passthrough() {
        var c = KafkaProducerConfiguration(kafka: kafka)
        c.kafka.properties["socket.keepalive.enable"] = "true"
        c.properties["linger.ms"] = "50"
        let p = c.librdkafkaProperties()
        #expect(p["socket.keepalive.enable"] == "true")
        #expect(p["linger.ms"] == "50")
    }

    @Test("TLS and SASL (PLAIN, SCRAM) settings map to librdkafka's keys and are accepted")
    func security() async throws {
        let tls = KafkaTLS(caLocation: "/etc/ssl/certs/ca-certificates.crt", verifyHostname: false)
        var c = KafkaProducerConfiguration(
            kafka: KafkaConfiguration(
                bootstrapServers: "127.0.0.1:9",
                security: .sasl(KafkaSASL(mechanism: .scramSHA512, username: "u", password: "p"), tls: tls)))
        var p = c.librdkafkaProperties()
        #expect(p["security.protocol"] == "sasl_ssl")
        #expect(p["sasl.mechanisms"] == "SCRAM-SHA-512")
        #expect(p["sasl.username"] == "u" && p["sasl.password"] == "p")
        #expect(p["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt")
        #expect(p["ssl.endpoint.identification.algorithm"] == "none")
        let producer = try KafkaProducer(configuration: c)
        await producer.shutdown(timeout: .zero)

        c.kafka.security = .sasl(KafkaSASL(mechanism: .plain, username: "u", password: "p"), tls: nil)
        p = c.librdkafkaProperties()
        #expect(p["security.protocol"] == "sasl_plaintext" && p["sasl.mechanisms"] == "PLAIN")
        let plain = try KafkaProducer(configuration: c)
        await plain.shutdown(timeout: .zero)

        c.kafka.security = .tls(KafkaTLS())
        #expect(c.librdkafkaProperties()["security.protocol"] == "ssl")
        #expect(KafkaClientInfo.builtinFeatures.contains("sasl_scram"))
    }

    @Test("an unknown key fails at construction naming the key")
    func unknownKey() {
        var c = KafkaProducerConfiguration(kafka: kafka)
        c.properties["lingr.ms"] = "5"
        #expect {
            _ = try KafkaProducer(configuration: c)
        } throws: { error in
            let e = error as? KafkaError
            return e?.configurationKey == "lingr.ms" && e?.message.contains("unknown configuration property 'lingr.ms'") == true
        }
    }

    @Test("an invalid value fails naming the key and the value")
    func invalidValue() {
        var c = KafkaConsumerConfiguration(kafka: kafka, groupID: "g")
        c.properties["fetch.wait.max.ms"] = "soon"
        #expect {
            _ = try KafkaConsumer(configuration: c)
        } throws: { error in
            let e = error as? KafkaError
            return e?.configurationKey == "fetch.wait.max.ms" && e?.message.contains("'soon'") == true
        }
    }

    @Test("inconsistent settings fail at construction naming the key")
    func inconsistent() {
        var c = KafkaProducerConfiguration(kafka: kafka)
        c.properties["acks"] = "0"
        #expect {
            _ = try KafkaProducer(configuration: c)
        } throws: { error in
            (error as? KafkaError)?.configurationKey == "acks"
        }
    }

    @Test("error names and codes round-trip through librdkafka's table")
    func errorNames() {
        #expect(KafkaError.code(named: "NOT_LEADER_FOR_PARTITION") == 6)
        #expect(KafkaError.code(named: "RD_KAFKA_RESP_ERR__TRANSPORT") == -195)
        #expect(KafkaError.name(ofCode: 6) == "NOT_LEADER_FOR_PARTITION")
        #expect(KafkaError.code(named: "NO_SUCH_ERROR") == nil)
    }
}
