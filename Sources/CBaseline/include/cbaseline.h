// Plain C librdkafka loops: the baseline the Swift client is measured against (same process,
// same broker, same settings). Written for Streamfirst's benchmark; not used by the product.
#ifndef STREAMFIRST_CBASELINE_H
#define STREAMFIRST_CBASELINE_H

#include <stdint.h>

typedef struct {
    double wall_seconds;   // first send (or assign) to last delivery report (or last record)
    double cpu_seconds;    // user + system CPU of the whole process over the same span
    int64_t messages;
    int64_t bytes;
    int64_t errors;        // failed deliveries / consumer errors
} cb_result;

// Produces `count` records of `size` bytes without key, record i to partition i % partitions
// (even spread, so no partition outgrows the embedded broker's retention), fire-and-forget with
// delivery reports, then flushes. `linger_ms` as librdkafka's linger.ms;
// idempotence on, acks=all. Returns 0 on success, -1 with `errstr` filled.
int cb_produce(const char *brokers, const char *topic, int partitions, int64_t count, int size, int linger_ms,
               cb_result *out, char *errstr, int errstr_size);

// Reads `count` records from `partitions` partitions of `topic` from the beginning, by manual
// assignment (no group), with rd_kafka_consumer_poll. Returns 0 on success, -1 on error/timeout.
// `queued_min_messages` > 0 sets librdkafka's queued.min.messages.
int cb_consume(const char *brokers, const char *topic, int partitions, int64_t count, int queued_min_messages,
               cb_result *out, char *errstr, int errstr_size);

// ---- Stage and end-to-end baselines (streamfirst-bench stage / e2e) ----

// Librdkafka settings of the relay, mirroring the stage runtime's clients (StageClients):
// consumer in a group, auto.offset.reset=earliest, read_committed, queued.min.messages=1000000,
// auto commit every second; producer idempotent, acks=all, linger.ms as given.
typedef struct {
    const char *brokers;
    const char *group;          // consumer group (subscribe); the relay prints "assigned" when it gets partitions
    const char *from_topic;
    const char *to_topic;
    int fetch_wait_max_ms;      // fetch.wait.max.ms (the stage runtime's default is 10)
    int linger_ms;              // producer linger.ms (the stage runtime's default is 2)
    int nagle_disable;          // 1: socket.nagle.disable=true on both clients
} cb_relay_config;

// Consume -> produce (key, value and headers copied, partition by key like the stages) until
// cb_request_stop() or SIGTERM/SIGINT (after cb_install_stop_handler). Delivery reports are served
// with rd_kafka_poll on the same thread. Returns 0 on a clean stop (output flushed), -1 on error.
int cb_relay(const cb_relay_config *config, char *errstr, int errstr_size);

// Installs SIGTERM/SIGINT handlers that make cb_relay / cb_source return.
void cb_install_stop_handler(void);
void cb_request_stop(void);
// Clears a stop request, so that a process can run the relay (or source) again.
void cb_clear_stop(void);

// Produces `count` copies of `payload` to `topic`, record i with key "k<i % 1000>" (partitioned by
// key, like the stages' outputs) and headers sf.id = "bench-<i>" and sf.ingest_time = the wall
// clock in milliseconds when it is sent. `rate` > 0 paces sends to that many per second (what is
// due is sent, then it sleeps); 0 sends as fast as possible. `nagle_disable` 1 sets
// socket.nagle.disable=true. Flushes before returning.
int cb_source(const char *brokers, const char *topic, int64_t count, const uint8_t *payload, int payload_len,
              int linger_ms, int rate, int nagle_disable, cb_result *out, char *errstr, int errstr_size);

// Reads `count` records of `topic` (all `partitions`, by assignment from the beginning) and stores,
// per record, now (wall clock, microseconds) minus its sf.ingest_time header (milliseconds) * 1000
// into latencies_us (capacity `count`). Stops after `count` records, or `idle_seconds` without one.
// Returns the number of records read (>= 0) or -1 on error.
int64_t cb_latency_consume(const char *brokers, const char *topic, int partitions, int64_t count, int fetch_wait_max_ms,
                           double idle_seconds, int64_t *latencies_us, char *errstr, int errstr_size);

#endif
