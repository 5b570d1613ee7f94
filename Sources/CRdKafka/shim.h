// The C boundary of Streamfirst: librdkafka's client API and its mock cluster.
// Only the `Kafka` target imports this module.
#ifndef STREAMFIRST_CRDKAFKA_SHIM_H
#define STREAMFIRST_CRDKAFKA_SHIM_H
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#endif
