/* A Kafka cluster on loopback for tests and local runs: librdkafka's mock cluster, which speaks
 * the Kafka protocol to real clients (ours, kcat). It prints one line,
 *   bootstrap=127.0.0.1:P1,... control=127.0.0.1:PC
 * then serves until SIGTERM/SIGINT. The mock has no CreateTopics API, so topics are created
 * through a line protocol on the control port (one command per connection, one reply line):
 *   create TOPIC PARTITIONS        -> "ok" | "error ..."
 *   down BROKER_ID | up BROKER_ID  -> broker fault injection
 *   leader TOPIC PARTITION BROKER  -> moves the partition's leadership to the broker
 *   coordinator transaction|group KEY BROKER -> the coordinator of a transactional or group id
 *   errors COUNT CODE              -> the next COUNT Produce requests fail with Kafka error CODE
 * Usage: kafka_mock_broker [--brokers N] [--topic NAME:PARTITIONS]... */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop = 0;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static void reply(int fd, const char* text) {
  size_t n = strlen(text);
  if (write(fd, text, n) != (ssize_t)n) perror("write");
}

static void serve(rd_kafka_mock_cluster_t* mc, int fd) {
  char line[512], msg[600], topic[256], kind[32];
  ssize_t n = 0, r;
  int a = 0, b = 0;
  while (n < (ssize_t)sizeof line - 1 && (r = read(fd, line + n, sizeof line - 1 - n)) > 0) {
    n += r;
    if (memchr(line, '\n', (size_t)n)) break;
  }
  line[n > 0 ? n : 0] = '\0';
  if (sscanf(line, "create %255s %d", topic, &a) == 2) {
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, topic, a, 1);
    if (err) {
      snprintf(msg, sizeof msg, "error %s\n", rd_kafka_err2str(err));
      reply(fd, msg);
    } else {
      reply(fd, "ok\n");
    }
  } else if (sscanf(line, "leader %255s %d %d", topic, &a, &b) == 3) {
    reply(fd, rd_kafka_mock_partition_set_leader(mc, topic, a, b) ? "error\n" : "ok\n");
  } else if (sscanf(line, "coordinator %31s %255s %d", kind, topic, &a) == 3) {
    reply(fd, rd_kafka_mock_coordinator_set(mc, kind, topic, a) ? "error\n" : "ok\n");
  } else if (sscanf(line, "down %d", &a) == 1) {
    reply(fd, rd_kafka_mock_broker_set_down(mc, a) ? "error no such broker\n" : "ok\n");
  } else if (sscanf(line, "up %d", &a) == 1) {
    reply(fd, rd_kafka_mock_broker_set_up(mc, a) ? "error no such broker\n" : "ok\n");
  } else if (sscanf(line, "errors %d %d", &a, &b) == 2 && a > 0 && a <= 1000) {
    rd_kafka_resp_err_t errs[1000];
    int i;
    for (i = 0; i < a; i++) errs[i] = (rd_kafka_resp_err_t)b;
    rd_kafka_mock_push_request_errors_array(mc, 0 /* ApiKey Produce */, (size_t)a, errs);
    reply(fd, "ok\n");
  } else {
    reply(fd, "error unknown command\n");
  }
}

int main(int argc, char** argv) {
  char err[512];
  int brokers = 3, i, lfd, one = 1;
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_t* rk;
  rd_kafka_mock_cluster_t* mc;

  for (i = 1; i < argc; i++)
    if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) brokers = atoi(argv[++i]);
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    fprintf(stderr, "rd_kafka_new: %s\n", err);
    return 1;
  }
  mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    fprintf(stderr, "cannot start the mock cluster\n");
    return 1;
  }
  for (i = 1; i < argc; i++)
    if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
      char name[256];
      int parts;
      if (sscanf(argv[++i], "%255[^:]:%d", name, &parts) != 2 ||
          rd_kafka_mock_topic_create(mc, name, parts, 1)) {
        fprintf(stderr, "bad --topic %s\n", argv[i]);
        return 2;
      }
    }

  lfd = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(lfd, 16) != 0 ||
      getsockname(lfd, (struct sockaddr*)&addr, &len) != 0) {
    perror("control port");
    return 1;
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGPIPE, SIG_IGN);
  printf("bootstrap=%s control=127.0.0.1:%d\n", rd_kafka_mock_cluster_bootstraps(mc),
         ntohs(addr.sin_port));
  fflush(stdout);
  while (!stop) {
    struct pollfd p = {lfd, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      int fd = accept(lfd, NULL, NULL);
      if (fd >= 0) {
        serve(mc, fd);
        close(fd);
      }
    }
  }
  close(lfd);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
