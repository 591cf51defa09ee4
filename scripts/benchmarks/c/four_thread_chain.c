/*
 * The `udp_echo_ext` path with no sidecar in it: a yardstick for `diffbench --stage-trace`.
 *
 * Four threads in two processes hand one 64 B datagram round, as a guest's echo through a
 * host socket does: guest -> "RPC loop" (futex) -> sendto -> echo process (UDP) -> sendto
 * -> "readiness" thread (edge-triggered epoll) -> guest (futex). No thread does any work
 * beyond its system calls, so what this costs is what the machine charges for the four
 * hand-offs. Each round trip records the time and CPU of every hand-off, and the report
 * groups round trips by placement (which hand-offs crossed CPUs) with the median of each
 * stage, in the same columns as `--stage-trace` (less the three that are our code's alone:
 * encode, decode and dispatch), so the two tables compare stage by stage.
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
/* When each hand-off happened, this trip (ns, CLOCK_MONOTONIC: one clock for both
 * processes). Written before the futex wake that publishes them. */
static _Atomic long long loop_woken, loop_sent, peer_received, peer_sent, ready_woken,
    ready_pushed;
static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

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
        loop_woken = now_ns();
        loop_cpu = sched_getcpu();
        sendto(sock, buf, SIZE, 0, (struct sockaddr *)&peer, sizeof peer);
        loop_sent = now_ns();
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
        ready_woken = now_ns();
        while (recv(sock, buf, SIZE, MSG_DONTWAIT) > 0) {
            int cpu;
            long long stamps[2];
            memcpy(&cpu, buf, sizeof cpu); /* the echo wrote its CPU and times there */
            memcpy(stamps, buf + 8, sizeof stamps);
            peer_cpu = cpu;
            peer_received = stamps[0];
            peer_sent = stamps[1];
            readiness_cpu = sched_getcpu();
            ready_pushed = now_ns();
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
        long long stamps[2] = {now_ns(), 0};
        int cpu = sched_getcpu();
        memcpy(buf, &cpu, sizeof cpu);
        stamps[1] = now_ns();
        memcpy(buf + 8, stamps, sizeof stamps);
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
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

    enum { STAGES = 7 };
    static const char *names[STAGES] = {"hop1 guest>loop", "loop sendto", "hop2 sent>peer",
                                        "peer", "hop3 peer>ready", "readiness",
                                        "hop4 ready>guest"};
    static double all[TRIPS], group[TRIPS], stages[STAGES][TRIPS];
    static int placement[TRIPS]; /* bit h set: hand-off h+1 crossed CPUs */
    for (int i = 0; i < WARM_UP + TRIPS; i++) {
        int guest_start = sched_getcpu();
        long long sent = now_ns();
        wake(&to_loop);
        wait_for(&to_guest);
        long long woken = now_ns();
        int guest_end = sched_getcpu();
        if (i < WARM_UP)
            continue;
        int k = i - WARM_UP;
        all[k] = (double)(woken - sent) / 1e3;
        long long marks[STAGES + 1] = {sent,        loop_woken, loop_sent,    peer_received,
                                       peer_sent,   ready_woken, ready_pushed, woken};
        for (int s = 0; s < STAGES; s++)
            stages[s][k] = (double)(marks[s + 1] - marks[s]) / 1e3;
        placement[k] = (guest_start != loop_cpu) | (loop_cpu != peer_cpu) << 1 |
                       (peer_cpu != readiness_cpu) << 2 | (readiness_cpu != guest_end) << 3;
    }
    kill(child, SIGKILL);

    printf("four-thread chain, %d round trips: p50 %.1f us\n", TRIPS,
           median(memcpy(group, all, sizeof all), TRIPS));
    printf("placement: x = that hand-off crossed CPUs; medians in us\n");
    printf("%9s %9s %7s %8s", "placement", "crossings", "share", "p50");
    for (int s = 0; s < STAGES; s++)
        printf(" %17s", names[s]);
    printf("\n");
    for (int p = 0; p < 16; p++) {
        int n = 0;
        for (int k = 0; k < TRIPS; k++)
            if (placement[k] == p)
                group[n++] = all[k];
        if (n * 100 < TRIPS) /* groups of 1 % or more */
            continue;
        char shape[5] = "----";
        for (int h = 0; h < 4; h++)
            if (p >> h & 1)
                shape[h] = 'x';
        printf("%9s %9d %6.1f%% %8.1f", shape, __builtin_popcount((unsigned)p),
               100.0 * n / TRIPS, median(group, n));
        for (int s = 0; s < STAGES; s++) {
            n = 0;
            for (int k = 0; k < TRIPS; k++)
                if (placement[k] == p)
                    group[n++] = stages[s][k];
            printf(" %17.1f", median(group, n));
        }
        printf("\n");
    }
    return 0;
}
