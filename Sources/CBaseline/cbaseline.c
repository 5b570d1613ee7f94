#include "cbaseline.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
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

// ---- Stage and end-to-end baselines ----

static volatile sig_atomic_t cb_stop_requested = 0;

static void cb_on_stop_signal(int sig) {
    (void)sig;
    cb_stop_requested = 1;
}

void cb_install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cb_on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void cb_request_stop(void) { cb_stop_requested = 1; }

void cb_clear_stop(void) { cb_stop_requested = 0; }

static int64_t wall_micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static rd_kafka_t *new_producer(const char *brokers, int linger_ms, int nagle_disable, dr_counts *counts, char *errstr,
                                int errstr_size) {
    char linger[32];
    snprintf(linger, sizeof linger, "%d", linger_ms);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers, errstr, errstr_size) ||
        set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
        set(conf, "acks", "all", errstr, errstr_size) ||
        set(conf, "linger.ms", linger, errstr, errstr_size) ||
        set(conf, "queue.buffering.max.messages", "100000", errstr, errstr_size) ||
        set(conf, "queue.buffering.max.kbytes", "1048576", errstr, errstr_size) ||
        (nagle_disable && set(conf, "socket.nagle.disable", "true", errstr, errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, counts);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, (size_t)errstr_size);
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

static void relay_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque) {
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        printf("assigned %d\n", parts->cnt);
        fflush(stdout);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

int cb_relay(const cb_relay_config *config, char *errstr, int errstr_size) {
    char fetch_wait[32];
    snprintf(fetch_wait, sizeof fetch_wait, "%d", config->fetch_wait_max_ms);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", config->brokers, errstr, errstr_size) ||
        set(conf, "group.id", config->group, errstr, errstr_size) ||
        set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        set(conf, "enable.auto.commit", "true", errstr, errstr_size) ||
        set(conf, "auto.commit.interval.ms", "1000", errstr, errstr_size) ||
        set(conf, "fetch.wait.max.ms", fetch_wait, errstr, errstr_size) ||
        set(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        set(conf, "queued.min.messages", "1000000", errstr, errstr_size) ||
        set(conf, "session.timeout.ms", "6000", errstr, errstr_size) ||
        set(conf, "heartbeat.interval.ms", "1000", errstr, errstr_size) ||
        (config->nagle_disable && set(conf, "socket.nagle.disable", "true", errstr, errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_rebalance_cb(conf, relay_rebalance);
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, (size_t)errstr_size);
    if (!consumer) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_poll_set_consumer(consumer);
    dr_counts counts = {0, 0};
    rd_kafka_t *producer = new_producer(config->brokers, config->linger_ms, config->nagle_disable, &counts, errstr, errstr_size);
    if (!producer) {
        rd_kafka_destroy(consumer);
        return -1;
    }
    rd_kafka_topic_t *out = rd_kafka_topic_new(producer, config->to_topic, NULL);  // handle up front (see notes)
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, config->from_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    int rc = 0;
    if (serr) {
        snprintf(errstr, (size_t)errstr_size, "subscribe: %s", rd_kafka_err2str(serr));
        rc = -1;
    }
    while (rc == 0 && !cb_stop_requested) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        rd_kafka_poll(producer, 0);
        if (!m) continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        rd_kafka_headers_t *in_headers = NULL;
        rd_kafka_headers_t *headers = NULL;
        if (rd_kafka_message_headers(m, &in_headers) == RD_KAFKA_RESP_ERR_NO_ERROR) headers = rd_kafka_headers_copy(in_headers);
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                producer, RD_KAFKA_V_RKT(out), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;  // the producer owns the headers now
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !cb_stop_requested) {
                rd_kafka_poll(producer, 10);
                continue;
            }
            if (headers) rd_kafka_headers_destroy(headers);
            snprintf(errstr, (size_t)errstr_size, "produce: %s", rd_kafka_err2str(err));
            rc = -1;
            break;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_flush(producer, 10000);
    if (rc == 0 && counts.failed > 0) {
        snprintf(errstr, (size_t)errstr_size, "%lld deliveries failed", (long long)counts.failed);
        rc = -1;
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_topic_destroy(out);
    rd_kafka_destroy(producer);
    return rc;
}

int cb_source(const char *brokers, const char *topic, int64_t count, const uint8_t *payload, int payload_len,
              int linger_ms, int rate, int nagle_disable, cb_result *out, char *errstr, int errstr_size) {
    dr_counts counts = {0, 0};
    rd_kafka_t *rk = new_producer(brokers, linger_ms, nagle_disable, &counts, errstr, errstr_size);
    if (!rk) return -1;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    double t0 = now_seconds(), c0 = cpu_seconds();
    int rc = 0;
    char key[32], id[48], ms[32];
    for (int64_t i = 0; i < count && !cb_stop_requested && rc == 0;) {
        if (rate > 0) {
            // What is due by now is sent; otherwise sleep until the next record is due.
            double elapsed = now_seconds() - t0;
            int64_t due = (int64_t)(elapsed * rate) + 1;
            if (i >= due) {
                double wait = (double)(i + 1) / rate - elapsed;
                if (wait < 0.0002) wait = 0.0002;
                rd_kafka_poll(rk, 0);
                struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
                continue;
            }
        }
        snprintf(key, sizeof key, "k%lld", (long long)(i % 1000));
        snprintf(id, sizeof id, "bench-%lld", (long long)i);
        snprintf(ms, sizeof ms, "%lld", (long long)(wall_micros() / 1000));
        rd_kafka_headers_t *headers = rd_kafka_headers_new(2);
        rd_kafka_header_add(headers, "sf.id", -1, id, -1);
        rd_kafka_header_add(headers, "sf.ingest_time", -1, ms, -1);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payload, (size_t)payload_len), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            i++;
            if (rate > 0 || i % 1000 == 0) rd_kafka_poll(rk, 0);
            continue;
        }
        rd_kafka_headers_destroy(headers);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);
            continue;
        }
        snprintf(errstr, (size_t)errstr_size, "produce: %s", rd_kafka_err2str(err));
        rc = -1;
    }
    rd_kafka_flush(rk, 60000);
    out->wall_seconds = now_seconds() - t0;
    out->cpu_seconds = cpu_seconds() - c0;
    out->messages = counts.delivered;
    out->bytes = counts.delivered * payload_len;
    out->errors = counts.failed;
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    if (rc == 0 && counts.delivered != count) {
        snprintf(errstr, (size_t)errstr_size, "delivered %lld of %lld", (long long)counts.delivered, (long long)count);
        rc = -1;
    }
    return rc;
}

int64_t cb_latency_consume(const char *brokers, const char *topic, int partitions, int64_t count, int fetch_wait_max_ms,
                           double idle_seconds, int64_t *latencies_us, char *errstr, int errstr_size) {
    char fetch_wait[32];
    snprintf(fetch_wait, sizeof fetch_wait, "%d", fetch_wait_max_ms);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers, errstr, errstr_size) ||
        set(conf, "group.id", "cbaseline-latency", errstr, errstr_size) ||  /* 2.0.2 refuses assign() without one */
        set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        set(conf, "fetch.wait.max.ms", fetch_wait, errstr, errstr_size) ||
        set(conf, "isolation.level", "read_committed", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return -1;
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
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (aerr) {
        snprintf(errstr, (size_t)errstr_size, "assign: %s", rd_kafka_err2str(aerr));
        rd_kafka_destroy(rk);
        return -1;
    }
    int64_t got = 0;
    double last = now_seconds();
    while (got < count && !cb_stop_requested) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        int64_t now_us = wall_micros();
        if (!m) {
            if (now_seconds() - last > idle_seconds) break;
            continue;
        }
        last = now_seconds();
        if (!m->err) {
            rd_kafka_headers_t *h = NULL;
            const void *v = NULL;
            size_t n = 0;
            int64_t ms = -1;
            if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                rd_kafka_header_get_last(h, "sf.ingest_time", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && v && n < 24) {
                char text[24];
                memcpy(text, v, n);
                text[n] = 0;
                ms = strtoll(text, NULL, 10);
            }
            if (ms >= 0) latencies_us[got++] = now_us - ms * 1000;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return got;
}
