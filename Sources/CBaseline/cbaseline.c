#include "cbaseline.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, int n) {
    return rd_kafka_conf_set(conf, k, v, errstr, (size_t)n) == RD_KAFKA_CONF_OK ? 0 : -1;
}

typedef struct {
    int64_t delivered;
    int64_t failed;
} dr_counts;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    dr_counts *c = (dr_counts *)opaque;
    if (m->err) c->failed++;
    else c->delivered++;
}

int cb_produce(const char *brokers, const char *topic, int partitions, int64_t count, int size, int linger_ms,
               cb_result *out, char *errstr, int errstr_size) {
    char linger[32];
    snprintf(linger, sizeof linger, "%d", linger_ms);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    dr_counts counts = {0, 0};
    if (set(conf, "bootstrap.servers", brokers, errstr, errstr_size) ||
        set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
        set(conf, "acks", "all", errstr, errstr_size) ||
        set(conf, "linger.ms", linger, errstr, errstr_size) ||
        set(conf, "queue.buffering.max.messages", "100000", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, &counts);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, (size_t)errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    char *payload = malloc((size_t)size);
    memset(payload, 'x', (size_t)size);

    double t0 = now_seconds(), c0 = cpu_seconds();
    for (int64_t i = 0; i < count;) {
        if (rd_kafka_produce(rkt, (int32_t)(i % partitions), RD_KAFKA_MSG_F_COPY, payload, (size_t)size,
                             NULL, 0, NULL) == 0) {
            i++;
            continue;
        }
        if (rd_kafka_last_error() == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);  // wait for delivery reports to free space
            continue;
        }
        snprintf(errstr, (size_t)errstr_size, "produce: %s", rd_kafka_err2str(rd_kafka_last_error()));
        break;
    }
    rd_kafka_flush(rk, 60000);
    double t1 = now_seconds(), c1 = cpu_seconds();

    out->wall_seconds = t1 - t0;
    out->cpu_seconds = c1 - c0;
    out->messages = counts.delivered;
    out->bytes = counts.delivered * size;
    out->errors = counts.failed;
    free(payload);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return counts.delivered == count ? 0 : -1;
}

int cb_consume(const char *brokers, const char *topic, int partitions, int64_t count, int queued_min_messages,
               cb_result *out, char *errstr, int errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers, errstr, errstr_size) ||
        set(conf, "group.id", "cbaseline-assign", errstr, errstr_size) ||  /* 2.0.2 refuses assign() without one */
        set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        set(conf, "auto.offset.reset", "earliest", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if (queued_min_messages > 0) {
        char qmm[32];
        snprintf(qmm, sizeof qmm, "%d", queued_min_messages);
        if (set(conf, "queued.min.messages", qmm, errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            return -1;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, (size_t)errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;

    int64_t got = 0, bytes = 0, errors = 0;
    double t0 = now_seconds(), c0 = cpu_seconds();
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, list);
    if (aerr) {
        snprintf(errstr, (size_t)errstr_size, "assign: %s", rd_kafka_err2str(aerr));
        rd_kafka_topic_partition_list_destroy(list);
        rd_kafka_destroy(rk);
        return -1;
    }
    double deadline = t0 + 120;
    while (got < count && now_seconds() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) continue;
        if (m->err) errors++;
        else {
            got++;
            bytes += (int64_t)m->len;
        }
        rd_kafka_message_destroy(m);
    }
    double t1 = now_seconds(), c1 = cpu_seconds();

    out->wall_seconds = t1 - t0;
    out->cpu_seconds = c1 - c0;
    out->messages = got;
    out->bytes = bytes;
    out->errors = errors;
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (got < count) snprintf(errstr, (size_t)errstr_size, "consumed %lld of %lld", (long long)got, (long long)count);
    return got == count ? 0 : -1;
}
