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

#endif
