/* A socketmap load generator in C, so the client is not what limits a resolver's measured rate.
 *
 * Same modes and JSON as bench/socketmap_client.py:
 *   socketmap_load PORT cached DOMAIN CLIENTS REQUESTS
 *   socketmap_load PORT cold FILE CLIENTS
 * Each client has its own connection and one request in flight at a time (as Postfix's
 * smtp processes ask); all of them run in one thread. bench/resolver_speed.py compiles
 * it with cc -O2.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct client {
    char **keys;
    long count, done;
    double *latencies; /* seconds, one per request */
    long ok, notfound, other;
    int fd;
    double started;
    char buffer[4096];
    size_t have;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_next(struct client *c) {
    char request[1100];
    const char *key = c->keys[c->done];
    int n = snprintf(request, sizeof request, "%zu:postfix %s,", strlen(key) + 8, key);
    c->started = now();
    c->have = 0;
    return send(c->fd, request, (size_t)n, 0) == n ? 0 : -1;
}

/* A whole netstring reply "N:payload," in c->buffer, or 0 while more must come. */
static int reply_complete(struct client *c) {
    char *colon = memchr(c->buffer, ':', c->have);
    if (!colon) return 0;
    long n = strtol(c->buffer, NULL, 10);
    size_t need = (size_t)(colon - c->buffer) + 1 + (size_t)n + 1;
    if (c->have < need) return 0;
    char *payload = colon + 1;
    if (n >= 2 && !memcmp(payload, "OK", 2)) c->ok++;
    else if (n >= 8 && !memcmp(payload, "NOTFOUND", 8)) c->notfound++;
    else c->other++;
    return 1;
}

static void connect_client(struct client *c, int port, int poller) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&to, sizeof to)) {
        perror("connect");
        exit(2);
    }
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(poller, EPOLL_CTL_ADD, c->fd, &event);
}

/* Every connection in one thread around epoll, as wrk and redis-benchmark do: the client
 * spends a few microseconds per request and no context switch per reply. */
static void run(struct client *all, int clients, int port) {
    int poller = epoll_create1(0), open = 0;
    for (int i = 0; i < clients; i++) {
        connect_client(&all[i], port, poller);
        if (all[i].count) {
            if (send_next(&all[i])) exit(2);
            open++;
        } else {
            close(all[i].fd);
        }
    }
    struct epoll_event ready[64];
    while (open) {
        int n = epoll_wait(poller, ready, 64, -1);
        for (int r = 0; r < n; r++) {
            struct client *c = ready[r].data.ptr;
            ssize_t got = recv(c->fd, c->buffer + c->have, sizeof c->buffer - c->have, 0);
            if (got <= 0) {
                fprintf(stderr, "request %ld: connection lost\n", c->done);
                exit(2);
            }
            c->have += (size_t)got;
            if (!reply_complete(c)) continue;
            c->latencies[c->done++] = now() - c->started;
            if (c->done < c->count) {
                if (send_next(c)) exit(2);
            } else {
                close(c->fd);
                open--;
            }
        }
    }
    close(poller);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s PORT cached DOMAIN CLIENTS REQUESTS | PORT cold FILE CLIENTS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), clients;
    char **keys;
    long total;
    struct client *all;
    if (!strcmp(argv[2], "cached")) {
        if (argc < 6) return 2;
        clients = atoi(argv[4]);
        long requests = atol(argv[5]);
        total = requests * clients;
        keys = malloc(sizeof *keys * (size_t)requests);
        for (long i = 0; i < requests; i++) keys[i] = argv[3];
        all = calloc((size_t)clients, sizeof *all);
        for (int i = 0; i < clients; i++) {
            all[i].keys = keys;
            all[i].count = requests;
        }
    } else {
        clients = atoi(argv[4]);
        FILE *f = fopen(argv[3], "r");
        if (!f) {
            perror(argv[3]);
            return 2;
        }
        long cap = 1024;
        total = 0;
        keys = malloc(sizeof *keys * (size_t)cap);
        char line[1024];
        while (fscanf(f, "%1000s", line) == 1) {
            if (total == cap) keys = realloc(keys, sizeof *keys * (size_t)(cap *= 2));
            keys[total++] = strdup(line);
        }
        fclose(f);
        /* client i takes domains i, i+clients, ... as the Python client does */
        all = calloc((size_t)clients, sizeof *all);
        for (int i = 0; i < clients; i++) {
            long mine = 0;
            char **own = malloc(sizeof *own * (size_t)(total / clients + 1));
            for (long j = i; j < total; j += clients) own[mine++] = keys[j];
            all[i].keys = own;
            all[i].count = mine;
        }
    }
    for (int i = 0; i < clients; i++) all[i].latencies = calloc((size_t)all[i].count + 1, sizeof(double));
    double started = now();
    run(all, clients, port);
    double elapsed = now() - started;
    double *latencies = malloc(sizeof(double) * (size_t)(total + 1));
    long n = 0, ok = 0, notfound = 0, other = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(latencies + n, all[i].latencies, sizeof(double) * (size_t)all[i].count);
        n += all[i].count;
        ok += all[i].ok;
        notfound += all[i].notfound;
        other += all[i].other;
    }
    qsort(latencies, (size_t)n, sizeof(double), by_value);
    double p50 = n ? latencies[n * 50 / 100] : 0, p99 = n ? latencies[n * 99 / 100] : 0;
    printf("{\"requests\": %ld, \"seconds\": %.6f, \"per_second\": %.3f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
           "\"replies\": {\"OK\": %ld, \"NOTFOUND\": %ld, \"other\": %ld}}\n",
           n, elapsed, n / elapsed, p50 * 1000, p99 * 1000, ok, notfound, other);
    return 0;
}
