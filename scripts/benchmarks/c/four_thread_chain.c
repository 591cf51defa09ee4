/*
 * The `udp_echo_ext` path with no sidecar in it: a yardstick for `diffbench --stage-trace`.
 *
 * Four threads in two processes hand one 64 B datagram round, as a guest's echo through a
 * host socket does: guest -> "RPC loop" (futex) -> sendto -> echo process (UDP) -> sendto
 * -> "readiness" thread (edge-triggered epoll) -> guest (futex). No thread does any work
 * beyond its system calls, so what this costs is what the machine charges for the four
 * hand-offs. Each round trip records the CPU of every thread, and the report groups round
 * trips by how many hand-offs crossed CPUs, as `--stage-trace` does.
 *
 *   cc -O2 -pthread scripts/benchmarks/c/four_thread_chain.c -o target/four_thread_chain
 *   target/four_thread_chain              # both CPUs, as the bench runs
 *   taskset -c 0 target/four_thread_chain # one CPU: no crossing (compare --one-cpu)
 *
 * Linux only (futex, epoll, sched_getcpu).
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { TRIPS = 20000, WARM_UP = 500, SIZE = 64 };

static _Atomic int to_loop, to_guest;          /* futex words: 1 = woken */
static _Atomic int loop_cpu, peer_cpu, readiness_cpu; /* where each ran, this trip */
static int sock;                               /* the "host socket" */
static struct sockaddr_in peer;

static void wake(_Atomic int *word) {
    atomic_store(word, 1);
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void wait_for(_Atomic int *word) {
    while (!atomic_exchange(word, 0))
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

static void *rpc_loop(void *unused) {
    char buf[SIZE] = {0};
    (void)unused;
    for (;;) {
        wait_for(&to_loop);
        loop_cpu = sched_getcpu();
        sendto(sock, buf, SIZE, 0, (struct sockaddr *)&peer, sizeof peer);
    }
    return NULL;
}

static void *readiness(void *unused) {
    char buf[SIZE];
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    (void)unused;
    epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev);
    for (;;) {
        if (epoll_wait(ep, &ev, 1, -1) < 1)
            continue;
        while (recv(sock, buf, SIZE, MSG_DONTWAIT) > 0) {
            int cpu;
            memcpy(&cpu, buf, sizeof cpu); /* the echo wrote its CPU there */
            peer_cpu = cpu;
            readiness_cpu = sched_getcpu();
            wake(&to_guest);
        }
    }
    return NULL;
}

static void echo_process(int fd) {
    char buf[SIZE];
    struct sockaddr_in from;
    for (;;) {
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, buf, SIZE, 0, (struct sockaddr *)&from, &len);
        if (n <= 0)
            _exit(0);
        int cpu = sched_getcpu();
        memcpy(buf, &cpu, sizeof cpu);
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return v[n / 2];
}

int main(void) {
    int server = socket(AF_INET, SOCK_DGRAM, 0);
    socklen_t len = sizeof peer;
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (server < 0 || bind(server, (struct sockaddr *)&peer, sizeof peer) != 0 ||
        getsockname(server, (struct sockaddr *)&peer, &len) != 0) {
        perror("echo socket");
        return 1;
    }
    pid_t child = fork();
    if (child == 0)
        echo_process(server);
    close(server);
    sock = socket(AF_INET, SOCK_DGRAM, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, rpc_loop, NULL);
    pthread_create(&thread, NULL, readiness, NULL);

    static double all[TRIPS], group[TRIPS];
    static int crossings[TRIPS];
    for (int i = 0; i < WARM_UP + TRIPS; i++) {
        int guest_start = sched_getcpu();
        double start = now_us();
        wake(&to_loop);
        wait_for(&to_guest);
        double took = now_us() - start;
        int guest_end = sched_getcpu();
        if (i < WARM_UP)
            continue;
        int k = i - WARM_UP;
        all[k] = took;
        crossings[k] = (guest_start != loop_cpu) + (loop_cpu != peer_cpu) +
                       (peer_cpu != readiness_cpu) + (readiness_cpu != guest_end);
    }
    kill(child, SIGKILL);

    printf("four-thread chain, %d round trips: p50 %.1f us\n", TRIPS,
           median(memcpy(group, all, sizeof all), TRIPS));
    printf("%9s %7s %8s\n", "crossings", "share", "p50");
    for (int c = 0; c <= 4; c++) {
        int n = 0;
        for (int k = 0; k < TRIPS; k++)
            if (crossings[k] == c)
                group[n++] = all[k];
        if (n * 100 >= TRIPS) /* groups of 1 % or more */
            printf("%9d %6.1f%% %8.1f\n", c, 100.0 * n / TRIPS, median(group, n));
    }
    return 0;
}
