/*
 * A foreign surfaceport peer, written only from docs/protocol.md, to prove
 * that the protocol is enough to interoperate without the library.
 *
 *   c_peer recv NAME COUNT          receive COUNT frames, verify the pattern
 *   c_peer echo NAME COUNT          receive, verify, write seed+1, send back
 *   c_peer produce NAME W H COUNT   send COUNT BGRA frames of our own memfd,
 *                                   waiting for a reply frame after each
 *
 * The pattern is the one in examples/pattern.ts; the seed travels as 4 bytes
 * of metadata (kind 1). Prints "ok ..." / "bad ..." per frame and "done".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HEADER_SIZE 136

static void die(const char *what) {
  fprintf(stderr, "c_peer: %s: %s\n", what, strerror(errno));
  exit(2);
}

static uint8_t pattern_byte(uint32_t index, uint32_t plane, uint32_t seed) {
  return (uint8_t)(index * 7u + (index >> 11) * 13u + plane * 101u + seed * 31u);
}

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static int connect_to(const char *name) {
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char full[108];
  int n = snprintf(full, sizeof full, "surfaceport/%s", name);
  memcpy(addr.sun_path + 1, full, (size_t)n); /* abstract: leading NUL */
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  if (connect(s, (struct sockaddr *)&addr, len) < 0) die("connect");
  return s;
}

struct plane { uint64_t offset; uint32_t bpr, width, height, bpe; };
struct frame {
  uint8_t header[HEADER_SIZE];
  uint8_t meta[65536];
  uint32_t meta_length;
  int fd;
  struct plane planes[3];
  uint32_t plane_count;
  uint64_t alloc_size;
};

/* Receives one message; returns 0 at the end of the stream. */
static int receive_frame(int s, struct frame *f) {
  uint8_t buffer[HEADER_SIZE + 65536];
  char control[CMSG_SPACE(sizeof(int) * 4)];
  struct iovec iov = { buffer, sizeof buffer };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
  ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) die("recvmsg");
  if (n == 0) return 0;
  f->fd = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int fds[4];
      memcpy(fds, CMSG_DATA(c), count * sizeof(int));
      for (size_t i = 0; i < count; i++) {
        if (f->fd < 0) f->fd = fds[i]; else close(fds[i]);
      }
    }
  }
  if (n < HEADER_SIZE || memcmp(buffer, "SPRT", 4) != 0 || rd16(buffer + 4) != 1 ||
      rd16(buffer + 6) != 1 || f->fd < 0) {
    printf("bad header\n");
    exit(1);
  }
  memcpy(f->header, buffer, HEADER_SIZE);
  f->meta_length = rd32(buffer + 28);
  memcpy(f->meta, buffer + HEADER_SIZE, f->meta_length);
  f->plane_count = rd32(buffer + 24);
  f->alloc_size = rd64(buffer + 48);
  for (uint32_t i = 0; i < f->plane_count && i < 3; i++) {
    const uint8_t *r = buffer + 64 + 24 * i;
    f->planes[i] = (struct plane){ rd64(r), rd32(r + 8), rd32(r + 12), rd32(r + 16), rd32(r + 20) };
  }
  int seals = fcntl(f->fd, F_GET_SEALS);
  struct stat st;
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW) ||
      fstat(f->fd, &st) < 0 || (uint64_t)st.st_size != f->alloc_size) {
    printf("bad descriptor\n");
    exit(1);
  }
  return 1;
}

static uint8_t *map(int fd, uint64_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

/* Checks (verify=1) or writes (verify=0) the pattern; returns mismatches. */
static long apply_pattern(uint8_t *base, const struct frame *f, uint32_t seed, int verify) {
  long bad = 0;
  for (uint32_t p = 0; p < f->plane_count; p++) {
    uint8_t *plane = base + f->planes[p].offset;
    uint32_t length = f->planes[p].bpr * f->planes[p].height;
    for (uint32_t i = 0; i < length; i++) {
      uint8_t want = pattern_byte(i, p, seed);
      if (verify) bad += plane[i] != want;
      else plane[i] = want;
    }
  }
  return bad;
}

/* A new read-locked description of fd: what the protocol says a sender sends. */
static int locked_description(int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int held = open(path, O_RDWR | O_CLOEXEC);
  if (held < 0) die("open /proc/self/fd");
  struct flock lock = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
  if (fcntl(held, F_OFD_SETLK, &lock) < 0) die("F_OFD_SETLK");
  return held;
}

static void send_frame(int s, const uint8_t header[HEADER_SIZE], uint32_t seed, int memfd) {
  uint8_t message[HEADER_SIZE + 4];
  memcpy(message, header, HEADER_SIZE);
  wr16(message + 10, 1);  /* metadata kind: bytes */
  wr32(message + 28, 4);  /* metadata length */
  wr32(message + HEADER_SIZE, seed);
  int held = locked_description(memfd);
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = { message, sizeof message };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &held, sizeof(int));
  if (sendmsg(s, &msg, MSG_NOSIGNAL) < 0) die("sendmsg");
  close(held); /* the queued message holds its own reference */
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) {
    fprintf(stderr, "usage: c_peer recv|echo NAME COUNT | produce NAME W H COUNT\n");
    return 2;
  }
  const char *mode = argv[1];
  int s = connect_to(argv[2]);
  printf("connected\n");
  static struct frame f;
  if (!strcmp(mode, "recv") || !strcmp(mode, "echo")) {
    long count = atol(argv[3]);
    for (long k = 0; k < count; k++) {
      if (!receive_frame(s, &f)) { printf("eof\n"); return 1; }
      uint32_t seed = f.meta_length == 4 ? rd32(f.meta) : 0;
      uint8_t *base = map(f.fd, f.alloc_size);
      long bad = apply_pattern(base, &f, seed, 1);
      char fourcc[5] = { 0 };
      for (int i = 0; i < 4; i++) fourcc[i] = (char)(rd32(f.header + 12) >> (24 - 8 * i));
      printf("%s %lu %ux%u %s\n", bad ? "bad" : "ok", (unsigned long)rd64(f.header + 32),
             rd32(f.header + 16), rd32(f.header + 20), fourcc);
      if (!strcmp(mode, "echo")) {
        apply_pattern(base, &f, seed + 1, 0);
        send_frame(s, f.header, seed + 1, f.fd);
      }
      munmap(base, f.alloc_size);
      close(f.fd);
    }
  } else if (!strcmp(mode, "produce") && argc >= 6) {
    uint32_t w = (uint32_t)atol(argv[3]), h = (uint32_t)atol(argv[4]);
    long count = atol(argv[5]);
    uint32_t bpr = (w * 4 + 63) / 64 * 64;
    uint64_t alloc = ((uint64_t)bpr * h + 4095) / 4096 * 4096;
    int memfd = memfd_create("c_peer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0) die("memfd_create");
    if (ftruncate(memfd, (off_t)alloc) < 0) die("ftruncate");
    if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) die("seal");
    uint8_t *base = map(memfd, alloc);
    uint8_t header[HEADER_SIZE] = { 0 };
    memcpy(header, "SPRT", 4);
    wr16(header + 4, 1);
    wr16(header + 6, 1);
    wr16(header + 8, HEADER_SIZE);
    wr32(header + 12, 0x42475241); /* BGRA */
    wr32(header + 16, w);
    wr32(header + 20, h);
    wr32(header + 24, 1);
    wr64(header + 48, alloc);
    wr64(header + 64, 0);
    wr32(header + 72, bpr);
    wr32(header + 76, w);
    wr32(header + 80, h);
    wr32(header + 84, 4);
    struct frame layout = { .plane_count = 1, .alloc_size = alloc };
    layout.planes[0] = (struct plane){ 0, bpr, w, h, 4 };
    for (long k = 0; k < count; k++) {
      apply_pattern(base, &layout, (uint32_t)k, 0);
      wr64(header + 32, (uint64_t)k);
      send_frame(s, header, (uint32_t)k, memfd);
      if (!receive_frame(s, &f)) { printf("eof\n"); return 1; }
      close(f.fd);
      printf("sent %ld\n", k);
    }
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  printf("done\n");
  close(s);
  return 0;
}
