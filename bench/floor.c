/*
 * floor.c: the C floor for surfaceport's benchmarks — what a competent C
 * program pays to hand a sealed memfd to another process over a
 * SOCK_SEQPACKET Unix socket on this kernel. `bench/run.ts` builds it with
 * `cc -O2` and compares the library against it under the same CPU pinning.
 *
 * Two processes (fork) joined by socketpair(AF_UNIX, SOCK_SEQPACKET).
 * Every message is a 136-byte header (the size of surfaceport's wire header)
 * plus, where stated, one fd in SCM_RIGHTS. All I/O is blocking (a process
 * that waits sleeps in the kernel) except in the -spin modes below.
 *
 *   floor roundtrip W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]
 *     The parent creates one memfd of W*H*4 bytes (MFD_CLOEXEC |
 *     MFD_ALLOW_SEALING, ftruncate, sealed against shrink/grow/seal) and maps
 *     it once. One round trip, timed with CLOCK_MONOTONIC around it:
 *       parent: sendmsg(header + memfd)
 *       child:  recvmsg(MSG_CMSG_CLOEXEC) -> fd; fstat(fd) for the inode;
 *               mmap(MAP_SHARED) only if that inode is not mapped yet (the
 *               mapping is cached by inode, never remapped); write the
 *               surface's last byte; sendmsg(header + the same fd) back;
 *               close(fd)
 *       parent: recvmsg -> fd; close(fd)
 *     That is two fd handoffs, like surfaceport's round trip (send a
 *     surface, the peer touches its last byte and sends the surface back).
 *     Prints {"p50_us":..,"p99_us":..,"mean_us":..,"iterations":..}.
 *
 *   floor pipelined W H POOL MILLISECONDS [PARENT_CPU CHILD_CPU]
 *     The parent creates POOL memfds as above and streams them: it sends a
 *     free one (header + fd), and when none is free it blocks in recvmsg
 *     for a release note. The child receives, maps by inode (cached), writes
 *     the last byte, closes the fd, and sends a 4-byte release note (the
 *     surface's index, no fd) back — the release a pool needs to reuse a
 *     surface. Counts handoffs per second after a 100 ms warm-up.
 *     Prints {"per_s":..,"handoffs":..,"seconds":..}.
 *
 *   floor pipelined-tracked W H POOL MILLISECONDS [PARENT_CPU CHILD_CPU]
 *     The same, doing what surfaceport's protocol does for crash-safe pool
 *     reuse (docs/protocol.md, "Use tracking"): each send opens a new
 *     description through /proc/self/fd, takes an F_OFD_SETLK read lock on
 *     it, sends it and closes its copy; the child maps an inode it has not
 *     seen through a description of its own (so the mapping holds no lock)
 *     and closes the received one; the parent re-checks with F_OFD_GETLK
 *     that a surface is free before sending it again. The release note
 *     stays as the wake-up. This is the floor for the library's protocol.
 *
 *   floor roundtrip-spin ... / floor pipelined-tracked-spin ...
 *     The same programs, spinning instead of sleeping: every recvmsg is
 *     MSG_DONTWAIT, retried at once on EAGAIN, on both sides. This is the
 *     floor for surfaceport's low-latency mode (`spinMicros`), which spins
 *     the same way: a blocking floor pays the wake-up of an idle vCPU (tens
 *     of microseconds on these VMs) that a spinning receiver never pays, so
 *     comparing a spinning library with it flatters the library.
 *
 *   floor fanout W H FRAMES ROUNDS [PARENT_CPU CHILD_CPU]
 *   floor fanout-spin W H FRAMES ROUNDS [PARENT_CPU CHILD_CPU]
 *     The floor of publish/subscribe's fan-out: a publisher with 1 and with
 *     4 subscriber processes (each on its own SOCK_SEQPACKET socketpair,
 *     all children on CHILD_CPU), doing per frame exactly the per-subscriber
 *     work of surfaceport's publisher: for each subscriber a new description
 *     of the memfd through /proc/self/fd, an F_OFD_SETLK read lock, one
 *     sendmsg of the 136-byte header with that descriptor, a close; then
 *     reading each subscriber's 16-byte CREDIT. A subscriber receives,
 *     closes the descriptor and answers with the CREDIT. One frame per
 *     millisecond (nanosleep), as bench/publish.ts paces the library. The
 *     two configurations alternate, ROUNDS batches of FRAMES frames each;
 *     measured is the publisher's CPU time per frame (getrusage, user +
 *     system) of each batch, and the wall time of each frame's sends and
 *     credits. -spin: the publisher retries recvmsg(MSG_DONTWAIT) for the
 *     credits instead of sleeping (the subscribers block: four spinning on
 *     one core would starve each other), so its CPU includes the spinning
 *     and only the wall time is the floor there.
 *     Prints {"cpu_per_frame_us":{"1":..,"4":..},"per_subscriber_us":..,
 *     "wall_per_frame_us":{"1":..,"4":..},"per_subscriber_wall_us":..}
 *     (medians over the batches; per subscriber = (4 - 1) / 3).
 *
 *   floor pingpong-stream W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]
 *   floor pingpong-stream-epoll W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]
 *   floor pingpong-seqpacket W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]
 *     The wake-up alone, no descriptor and no mapping: a 1-byte ping-pong
 *     (W and H are ignored; they keep roundtrip's argument positions) over
 *     a socketpair.
 *     -stream: SOCK_STREAM, each side blocks in read(). -stream-epoll: the
 *     same sockets nonblocking, each side waits the way a runtime's reactor
 *     does (tokio, libuv): read() first, on EAGAIN epoll_wait() on an
 *     edge-triggered registration made once, then read() again.
 *     -seqpacket: SOCK_SEQPACKET, blocking recv(). What the default mode's
 *     round trip pays beyond these is the work around each handoff, not
 *     the wake-up (docs/benchmarks.md, issue 24).
 *     Prints {"p50_us":..,"p99_us":..,"mean_us":..,"iterations":..}.
 *
 * PARENT_CPU / CHILD_CPU (-1: leave unpinned) pin each process to one core
 * with sched_setaffinity.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define HEADER_SIZE 136
#define CACHE_SIZE 16

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int make_surface(size_t size) {
  int fd = memfd_create("floor", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) die("F_ADD_SEALS");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  return fd;
}

/* sendmsg of header (+ one fd if fd >= 0). */
static void send_msg(int sock, const void *data, size_t length, int fd) {
  struct iovec iov = {(void *)data, length};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return;
    if (errno == EPIPE || errno == ECONNRESET) exit(0); /* peer gone: the run is over */
    if (errno != EINTR) die("sendmsg");
  }
}

/* spin mode: recvmsg(MSG_DONTWAIT) retried on EAGAIN instead of sleeping in the kernel. */
static int spin = 0;

/* recvmsg into buf; returns the received fd or -1; exits on EOF. */
static int recv_msg(int sock, void *buf, size_t length, ssize_t *received) {
  struct iovec iov = {buf, length};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  for (;;) {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (spin ? MSG_DONTWAIT : 0));
    if (n >= 0) break;
    if (errno == ECONNRESET) exit(0); /* peer gone: the run is over */
    if (spin && errno == EAGAIN) continue;
    if (errno != EINTR) die("recvmsg");
  }
  if (n == 0) exit(0); /* peer closed */
  if (received) *received = n;
  int fd = -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
  }
  return fd;
}

/* The receiver's mapping cache, keyed by (dev, inode). */
static struct {
  dev_t dev;
  ino_t ino;
  unsigned char *base;
  size_t size;
} cache[CACHE_SIZE];
static int cached;

/* tracked mode: see the usage comment. */
static int tracked = 0;

/* A new description of fd, through /proc/self/fd. */
static int reopen_fd(int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int d = open(path, O_RDWR | O_CLOEXEC);
  if (d < 0) die("open /proc/self/fd");
  return d;
}

/* A new read-locked description of fd: what a tracked send sends. */
static int locked_description(int fd) {
  int d = reopen_fd(fd);
  struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
  if (fcntl(d, F_OFD_SETLK, &lock) != 0) die("F_OFD_SETLK");
  return d;
}

/* True if another description holds a lock on fd's file. */
static int locked_elsewhere(int fd) {
  struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_OFD_GETLK, &probe) != 0) die("F_OFD_GETLK");
  return probe.l_type != F_UNLCK;
}

static unsigned char *map_cached(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  for (int i = 0; i < cached; i++) {
    if (cache[i].ino == st.st_ino && cache[i].dev == st.st_dev) return cache[i].base;
  }
  /* Tracked: a mapping made through the received (locked) description would
   * hold its lock until munmap, so map through a description of our own. */
  int map_fd = tracked ? reopen_fd(fd) : fd;
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
  if (p == MAP_FAILED) die("mmap");
  if (tracked) close(map_fd);
  if (cached == CACHE_SIZE) die("mapping cache full");
  cache[cached].dev = st.st_dev;
  cache[cached].ino = st.st_ino;
  cache[cached].base = p;
  cache[cached].size = (size_t)st.st_size;
  return cache[cached++].base;
}

static size_t cached_size(const unsigned char *base) {
  for (int i = 0; i < cached; i++) {
    if (cache[i].base == base) return cache[i].size;
  }
  return 0;
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void roundtrip(size_t size, long iterations, long warmup, int parent_cpu, int child_cpu) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  int surface = make_surface(size);
  unsigned char header[HEADER_SIZE] = {'S', 'P', 'R', 'T'};
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    pin(child_cpu);
    close(sv[0]);
    unsigned char buf[HEADER_SIZE + 1];
    for (;;) {
      int fd = recv_msg(sv[1], buf, sizeof buf, NULL);
      if (fd < 0) die("child: message without fd");
      unsigned char *base = map_cached(fd);
      base[cached_size(base) - 1]++;
      send_msg(sv[1], header, sizeof header, fd);
      close(fd);
    }
  }
  pin(parent_cpu);
  close(sv[1]);
  uint64_t *samples = calloc((size_t)iterations, sizeof *samples);
  if (!samples) die("calloc");
  unsigned char buf[HEADER_SIZE + 1];
  double total = 0;
  for (long i = -warmup; i < iterations; i++) {
    uint64_t t0 = now_ns();
    send_msg(sv[0], header, sizeof header, surface);
    int fd = recv_msg(sv[0], buf, sizeof buf, NULL);
    if (fd < 0) die("parent: reply without fd");
    close(fd);
    uint64_t t1 = now_ns();
    if (i >= 0) {
      samples[i] = t1 - t0;
      total += (double)(t1 - t0);
    }
  }
  close(sv[0]);
  waitpid(child, NULL, 0);
  qsort(samples, (size_t)iterations, sizeof *samples, compare_u64);
  printf("{\"p50_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"iterations\":%ld}\n",
         samples[iterations / 2] / 1e3, samples[(iterations * 99) / 100] / 1e3,
         total / iterations / 1e3, iterations);
  free(samples);
}

static void pipelined(size_t size, int pool, long milliseconds, int parent_cpu, int child_cpu) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  int surfaces[CACHE_SIZE];
  if (pool < 1 || pool > CACHE_SIZE) die("pool size");
  for (int i = 0; i < pool; i++) surfaces[i] = make_surface(size);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    pin(child_cpu);
    close(sv[0]);
    unsigned char buf[HEADER_SIZE + 1];
    for (;;) {
      int fd = recv_msg(sv[1], buf, sizeof buf, NULL);
      if (fd < 0) die("child: message without fd");
      unsigned char *base = map_cached(fd);
      base[cached_size(base) - 1]++;
      close(fd);
      send_msg(sv[1], buf + 4, 4, -1); /* release note: the index */
    }
  }
  pin(parent_cpu);
  close(sv[1]);
  unsigned char header[HEADER_SIZE] = {'S', 'P', 'R', 'T'};
  int free_list[CACHE_SIZE], free_count = pool;
  for (int i = 0; i < pool; i++) free_list[i] = i;
  unsigned char note[HEADER_SIZE + 1];
  uint64_t start = now_ns(), measure_from = start + 100000000u, end = measure_from;
  end += (uint64_t)milliseconds * 1000000u;
  long handoffs = 0;
  int measuring = 0;
  for (;;) {
    while (free_count == 0) {
      ssize_t n = 0;
      recv_msg(sv[0], note, sizeof note, &n);
      int32_t index;
      memcpy(&index, note, sizeof index);
      free_list[free_count++] = index;
    }
    int index = free_list[--free_count];
    if (tracked && locked_elsewhere(surfaces[index])) {
      free_list[free_count++] = index; /* not free yet after all: wait for another note */
      ssize_t n = 0;
      recv_msg(sv[0], note, sizeof note, &n);
      int32_t released;
      memcpy(&released, note, sizeof released);
      free_list[free_count++] = released;
      continue;
    }
    memcpy(header + 4, &index, sizeof index);
    if (tracked) {
      int held = locked_description(surfaces[index]);
      send_msg(sv[0], header, sizeof header, held);
      close(held); /* the queued message holds its own reference */
    } else {
      send_msg(sv[0], header, sizeof header, surfaces[index]);
    }
    uint64_t t = now_ns();
    if (!measuring && t >= measure_from) {
      measuring = 1;
      handoffs = 0;
      measure_from = t;
    }
    handoffs++;
    if (measuring && t >= end) break;
  }
  double seconds = (double)(now_ns() - measure_from) / 1e9;
  close(sv[0]);
  waitpid(child, NULL, 0);
  printf("{\"per_s\":%.1f,\"handoffs\":%ld,\"seconds\":%.3f}\n", handoffs / seconds, handoffs,
         seconds);
}

/* --- fanout: the publisher's per-subscriber work (see the usage comment) -------------- */

#define CREDIT_SIZE 16
#define MAX_SUBSCRIBERS 4

/* One subscriber: receive, close the descriptor, answer with a CREDIT, until the end. */
static void subscriber(int sock) {
  unsigned char buf[HEADER_SIZE], credit[CREDIT_SIZE] = {'S', 'P', 'R', 'T', 1, 0, 3, 0, 16};
  credit[12] = 1;
  for (;;) {
    int fd = recv_msg(sock, buf, sizeof buf, NULL); /* exits at the publisher's end */
    if (fd >= 0) close(fd);
    send_msg(sock, credit, sizeof credit, -1);
  }
}

static double cpu_us(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *values, int n) {
  qsort(values, (size_t)n, sizeof *values, compare_double);
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

static void fanout(size_t size, long frames, int rounds, int parent_cpu, int child_cpu) {
  static const int counts[2] = {1, MAX_SUBSCRIBERS};
  int socks[2][MAX_SUBSCRIBERS];
  pid_t children[2][MAX_SUBSCRIBERS];
  for (int c = 0; c < 2; c++) {
    for (int i = 0; i < counts[c]; i++) {
      int pair[2];
      if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) die("socketpair");
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        close(pair[0]);
        pin(child_cpu);
        spin = 0; /* four spinning subscribers on one core would starve each other */
        subscriber(pair[1]);
        _exit(0);
      }
      close(pair[1]);
      socks[c][i] = pair[0];
      children[c][i] = pid;
    }
  }
  pin(parent_cpu);
  int memfd = make_surface(size);
  unsigned char header[HEADER_SIZE] = {'S', 'P', 'R', 'T'}, credit[CREDIT_SIZE];
  double *cpu[2], *wall[2];
  for (int c = 0; c < 2; c++) {
    cpu[c] = calloc((size_t)rounds, sizeof(double));
    wall[c] = calloc((size_t)rounds * (size_t)frames, sizeof(double));
  }
  struct timespec pace = {0, 1000000};
  for (int r = -1; r < rounds; r++) { /* round -1 warms up */
    for (int c = 0; c < 2; c++) {
      double start = cpu_us();
      for (long k = 0; k < frames; k++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < counts[c]; i++) {
          int held = locked_description(memfd);
          send_msg(socks[c][i], header, sizeof header, held);
          close(held);
        }
        for (int i = 0; i < counts[c]; i++) recv_msg(socks[c][i], credit, sizeof credit, NULL);
        if (r >= 0) wall[c][r * frames + k] = (double)(now_ns() - t0) / 1000.0;
        nanosleep(&pace, NULL);
      }
      if (r >= 0) cpu[c][r] = (cpu_us() - start) / (double)frames;
    }
  }
  double cpu1 = median(cpu[0], rounds), cpu4 = median(cpu[1], rounds);
  double wall1 = median(wall[0], rounds * (int)frames), wall4 = median(wall[1], rounds * (int)frames);
  printf("{\"cpu_per_frame_us\":{\"1\":%.2f,\"4\":%.2f},\"per_subscriber_us\":%.2f,"
         "\"wall_per_frame_us\":{\"1\":%.2f,\"4\":%.2f},\"per_subscriber_wall_us\":%.2f}\n",
         cpu1, cpu4, (cpu4 - cpu1) / 3, wall1, wall4, (wall4 - wall1) / 3);
  fflush(stdout);
  for (int c = 0; c < 2; c++) {
    for (int i = 0; i < counts[c]; i++) {
      close(socks[c][i]);
      waitpid(children[c][i], NULL, 0);
    }
  }
}

/* pingpong modes: see the usage comment. */
static int pp_epoll = 0;

/* Reads the one byte of a ping: blocking, or the reactor's way (read, epoll_wait, read). */
static void pp_read(int sock, int ep) {
  char b;
  for (;;) {
    ssize_t n = read(sock, &b, 1);
    if (n == 1) return;
    if (n == 0) exit(0); /* peer closed: the run is over */
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) exit(0);
    if (!(pp_epoll && errno == EAGAIN)) die("read");
    struct epoll_event ev;
    while (epoll_wait(ep, &ev, 1, -1) < 0) {
      if (errno != EINTR) die("epoll_wait");
    }
  }
}

static void pp_write(int sock) {
  char b = 1;
  while (write(sock, &b, 1) != 1) {
    if (errno == EPIPE || errno == ECONNRESET) exit(0);
    if (errno != EINTR && errno != EAGAIN) die("write");
  }
}

/* An epoll instance watching sock for input, edge-triggered (as tokio and libuv register). */
static int pp_epoll_of(int sock) {
  if (!pp_epoll) return -1;
  if (fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK) != 0) die("O_NONBLOCK");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = sock};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev) != 0) die("epoll_ctl");
  return ep;
}

static void pingpong(int type, long iterations, long warmup, int parent_cpu, int child_cpu) {
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    pin(child_cpu);
    close(sv[0]);
    int ep = pp_epoll_of(sv[1]);
    for (;;) {
      pp_read(sv[1], ep);
      pp_write(sv[1]);
    }
  }
  pin(parent_cpu);
  close(sv[1]);
  int ep = pp_epoll_of(sv[0]);
  uint64_t *samples = calloc((size_t)iterations, sizeof *samples);
  if (!samples) die("calloc");
  double total = 0;
  for (long i = -warmup; i < iterations; i++) {
    uint64_t t0 = now_ns();
    pp_write(sv[0]);
    pp_read(sv[0], ep);
    uint64_t t1 = now_ns();
    if (i >= 0) {
      samples[i] = t1 - t0;
      total += (double)(t1 - t0);
    }
  }
  close(sv[0]);
  waitpid(child, NULL, 0);
  qsort(samples, (size_t)iterations, sizeof *samples, compare_u64);
  printf("{\"p50_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"iterations\":%ld}\n",
         samples[iterations / 2] / 1e3, samples[(iterations * 99) / 100] / 1e3,
         total / iterations / 1e3, iterations);
  free(samples);
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr,
            "usage: floor roundtrip W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]\n"
            "       floor pipelined W H POOL MILLISECONDS [PARENT_CPU CHILD_CPU]\n"
            "       floor pipelined-tracked W H POOL MILLISECONDS [PARENT_CPU CHILD_CPU]\n"
            "       floor fanout W H FRAMES ROUNDS [PARENT_CPU CHILD_CPU]\n"
            "       floor pingpong-stream | pingpong-stream-epoll | pingpong-seqpacket W H ITERATIONS WARMUP [PARENT_CPU CHILD_CPU]\n"
            "       floor roundtrip-spin | pipelined-tracked-spin | fanout-spin (same arguments)\n");
    return 2;
  }
  size_t size = (size_t)atol(argv[2]) * (size_t)atol(argv[3]) * 4;
  int parent_cpu = argc > 7 ? atoi(argv[6]) : -1;
  int child_cpu = argc > 7 ? atoi(argv[7]) : -1;
  signal(SIGPIPE, SIG_IGN);
  const char *mode = argv[1];
  if (strcmp(mode, "roundtrip-spin") == 0) {
    spin = 1;
    mode = "roundtrip";
  } else if (strcmp(mode, "pipelined-tracked-spin") == 0) {
    spin = 1;
    mode = "pipelined-tracked";
  } else if (strcmp(mode, "fanout-spin") == 0) {
    spin = 1;
    mode = "fanout";
  }
  if (strcmp(mode, "roundtrip") == 0) {
    roundtrip(size, atol(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "pipelined-tracked") == 0) {
    tracked = 1;
    pipelined(size, atoi(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "pipelined") == 0) {
    pipelined(size, atoi(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "pingpong-stream") == 0) {
    pingpong(SOCK_STREAM, atol(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "pingpong-stream-epoll") == 0) {
    pp_epoll = 1;
    pingpong(SOCK_STREAM, atol(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "pingpong-seqpacket") == 0) {
    pingpong(SOCK_SEQPACKET, atol(argv[4]), atol(argv[5]), parent_cpu, child_cpu);
  } else if (strcmp(mode, "fanout") == 0) {
    fanout(size, atol(argv[4]), atoi(argv[5]), parent_cpu, child_cpu);
  } else {
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
  }
  return 0;
}
