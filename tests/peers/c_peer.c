/*
 * A foreign surfaceport peer, written only from docs/protocol.md, to prove
 * that the protocol is enough to interoperate without the library.
 *
 *   c_peer recv NAME COUNT          receive COUNT frames, verify the pattern
 *   c_peer subscribe NAME POLICY COUNT
 *                                   subscribe to the publisher NAME (SUBSCRIBE,
 *                                   POLICY latest|queue, depth 1), then like recv,
 *                                   returning a CREDIT after each frame
 *   c_peer echo NAME COUNT          receive, verify, write seed+1, send back
 *   c_peer produce NAME W H COUNT   send COUNT BGRA frames of our own memfd,
 *                                   waiting for a reply frame after each
 *   c_peer produce-ring NAME W H COUNT
 *                                   the same, ringing the receiver's doorbell
 *                                   (docs/protocol.md, "Doorbell") when it
 *                                   parks, 2 ms after each reply (so that it
 *                                   has parked); prints "doorbell" or
 *                                   "no doorbell"
 *   c_peer check NAME COUNT         listen as NAME, accept one client, judge
 *                                   COUNT messages by every receiver rule of
 *                                   docs/protocol.md in its order, and print
 *                                   "ok" or the ProtocolError reason for each
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
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

/* A publish/subscribe control message (docs/protocol.md): SUBSCRIBE (2) or CREDIT (3). */
static void send_control(int s, uint16_t type, uint16_t field, uint32_t value) {
  uint8_t message[16];
  memcpy(message, "SPRT", 4);
  wr16(message + 4, 1);
  wr16(message + 6, type);
  wr16(message + 8, 16);
  wr16(message + 10, field);
  wr32(message + 12, value);
  if (send(s, message, sizeof message, MSG_NOSIGNAL) != (ssize_t)sizeof message) die("send");
}

/* One message with one descriptor in SCM_RIGHTS. */
static void send_with_fd(int s, const void *bytes, size_t length, int fd) {
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = { (void *)bytes, length };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(s, &msg, MSG_NOSIGNAL) < 0) die("sendmsg");
}

/* --- the doorbell (docs/protocol.md, "Doorbell"): ring the receiver when it parks ----------- */

static int ring_fd = -1;
static int32_t *peer_parked; /* word 0 of the flag page we made and sent with DOORBELL */

/* Offers our rings to the peer of s, if it has a doorbell; returns 1 if it does. */
static int offer_doorbell(int s) {
  struct ucred peer, bell;
  socklen_t len = sizeof peer;
  if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) die("SO_PEERCRED");
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  int n = xdg && xdg[0] == '/'
    ? snprintf(addr.sun_path, sizeof addr.sun_path, "%s/surfaceport/bell-%d", xdg, (int)peer.pid)
    : snprintf(addr.sun_path, sizeof addr.sun_path, "/tmp/surfaceport-%u/bell-%d",
               (unsigned)geteuid(), (int)peer.pid);
  if (n < 0 || n >= (int)sizeof addr.sun_path) return 0;
  int r = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r < 0) die("socket");
  len = sizeof bell;
  if (connect(r, (struct sockaddr *)&addr, sizeof addr) < 0 ||
      getsockopt(r, SOL_SOCKET, SO_PEERCRED, &bell, &len) < 0 ||
      bell.pid != peer.pid || bell.uid != peer.uid) {
    close(r); /* no doorbell, or not our peer's: never ring it */
    return 0;
  }
  uint8_t token[16], hello[24] = { 0 }, message[32] = { 0 };
  if (getrandom(token, sizeof token, 0) != (ssize_t)sizeof token) die("getrandom");
  memcpy(hello, "SPBL", 4);
  wr16(hello + 4, 1);
  memcpy(hello + 8, token, 16);
  if (send(r, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello) die("send HELLO");
  int page = memfd_create("doorbell", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (page < 0 || ftruncate(page, 4096) < 0 ||
      fcntl(page, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) die("flag page");
  peer_parked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, page, 0);
  if (peer_parked == MAP_FAILED) die("mmap flag page");
  memcpy(message, "SPRT", 4);
  wr16(message + 4, 1);
  wr16(message + 6, 4); /* DOORBELL */
  wr16(message + 8, 32);
  memcpy(message + 16, token, 16);
  send_with_fd(s, message, sizeof message, page);
  close(page);
  ring_fd = r;
  return 1;
}

/* After each message sent: ring if the receiver said it parks (and clear its flag). */
static void ring_if_parked(void) {
  if (ring_fd >= 0 && __atomic_exchange_n(peer_parked, 0, __ATOMIC_SEQ_CST) != 0) {
    (void)send(ring_fd, "\1", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

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
  send_with_fd(s, message, sizeof message, held);
  close(held); /* the queued message holds its own reference */
}

/* --- the receiver rules (docs/protocol.md, "Receiving"), in their order ------------------ */

#define MAX_META 65536u
#define MAX_SURFACE (1ull << 30)
#define MAX_SAFE ((1ll << 53) - 1)
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define HUGETLBFS_MAGIC_NUMBER 0x958458f6u

struct format { uint32_t fourcc, planes, shape[3][3]; /* bpe, sx, sy */ };
static const struct format FORMATS[] = {
  { 0x42475241, 1, { { 4, 1, 1 } } }, { 0x52474241, 1, { { 4, 1, 1 } } },
  { 0x4C303038, 1, { { 1, 1, 1 } } },
  { 0x34323076, 2, { { 1, 1, 1 }, { 2, 2, 2 } } }, { 0x34323066, 2, { { 1, 1, 1 }, { 2, 2, 2 } } },
  { 0x79343230, 3, { { 1, 1, 1 }, { 1, 2, 2 }, { 1, 2, 2 } } },
};

/* A strict RFC 8259 JSON validator (no BOM, no NaN): returns the end of one value or NULL. */
static const char *json_value(const char *p, const char *end, int depth);
static const char *json_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}
static const char *json_string(const char *p, const char *end) {
  for (p++; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++p >= end) return NULL;
      if (*p == 'u') {
        for (int i = 0; i < 4; i++) if (++p >= end || !strchr("0123456789abcdefABCDEF", *p)) return NULL;
      } else if (!strchr("\"\\/bfnrt", *p)) return NULL;
    }
  }
  return NULL;
}
static const char *json_number(const char *p, const char *end) {
  if (p < end && *p == '-') p++;
  if (p >= end) return NULL;
  if (*p == '0') p++;
  else if (*p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
  else return NULL;
  if (p < end && *p == '.') {
    if (++p >= end || *p < '0' || *p > '9') return NULL;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || *p < '0' || *p > '9') return NULL;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  return p;
}
static const char *json_value(const char *p, const char *end, int depth) {
  p = json_ws(p, end);
  if (p >= end || depth > 512) return NULL;
  if (*p == '"') return json_string(p, end);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = json_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (p >= end || *p != '"' || !(p = json_string(p, end))) return NULL;
        p = json_ws(p, end);
        if (p >= end || *p++ != ':') return NULL;
      }
      if (!(p = json_value(p, end, depth + 1))) return NULL;
      p = json_ws(p, end);
      if (p < end && *p == ',') { p = json_ws(p + 1, end); continue; }
      return p < end && *p == close ? p + 1 : NULL;
    }
  }
  for (int i = 0; i < 3; i++) {
    const char *word = (const char *[]){ "true", "false", "null" }[i];
    size_t n = strlen(word);
    if ((size_t)(end - p) >= n && !memcmp(p, word, n)) return p + n;
  }
  return json_number(p, end);
}
static int valid_utf8(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || i + len > n) return 0;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += len;
  }
  return 1;
}
static int valid_json(const uint8_t *text, size_t n) {
  if (!valid_utf8(text, n)) return 0;
  const char *end = (const char *)text + n;
  const char *p = json_value((const char *)text, end, 0); /* a BOM is not a value: refused */
  return p && json_ws(p, end) == end;
}

static const char *check_header(const uint8_t *m, size_t n, uint32_t *kind, uint64_t *alloc) {
  if (n < 8) return "SHORT_MESSAGE";
  if (memcmp(m, "SPRT", 4)) return "BAD_MAGIC";
  if (rd16(m + 4) != 1) return "BAD_VERSION";
  if (rd16(m + 6) != 1) return "BAD_TYPE";
  if (n < HEADER_SIZE) return "SHORT_MESSAGE";
  if (rd16(m + 8) != HEADER_SIZE) return "BAD_HEADER";
  uint16_t flags = rd16(m + 10);
  *kind = flags & 3;
  if ((flags & ~3u) || *kind == 3) return "BAD_META";
  const struct format *format = NULL;
  for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++)
    if (FORMATS[i].fourcc == rd32(m + 12)) format = &FORMATS[i];
  if (!format) return "BAD_GEOMETRY";
  uint32_t width = rd32(m + 16), height = rd32(m + 20), count = rd32(m + 24), meta = rd32(m + 28);
  if (count < 1 || count > 3) return "BAD_GEOMETRY";
  if (meta > MAX_META) return "TOO_LARGE";
  if (n != HEADER_SIZE + meta) return "SHORT_MESSAGE";
  if ((*kind == 0 && meta) || (*kind == 2 && !meta)) return "BAD_META";
  if (rd64(m + 56)) return "BAD_HEADER";
  int64_t timestamp = (int64_t)rd64(m + 40);
  if (rd64(m + 32) > (uint64_t)MAX_SAFE || timestamp > MAX_SAFE || timestamp < -MAX_SAFE)
    return "BAD_HEADER";
  *alloc = rd64(m + 48);
  if (*alloc > MAX_SURFACE) return "TOO_LARGE";
  struct plane planes[3];
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *r = m + 64 + 24 * i;
    planes[i] = (struct plane){ rd64(r), rd32(r + 8), rd32(r + 12), rd32(r + 16), rd32(r + 20) };
    if (planes[i].offset > *alloc) return "BAD_GEOMETRY";
  }
  if (!*alloc || !width || !height || width > 32768 || height > 32768) return "BAD_GEOMETRY";
  if (count != format->planes || (count > 1 && (width % 2 || height % 2))) return "BAD_GEOMETRY";
  for (uint32_t i = 0; i < count; i++) {
    const struct plane *p = &planes[i];
    const uint32_t *shape = format->shape[i];
    if (p->width != width / shape[1] || p->height != height / shape[2] || p->bpe != shape[0] ||
        (uint64_t)p->bpr < (uint64_t)p->width * p->bpe) return "BAD_GEOMETRY";
    uint64_t end = p->offset + (uint64_t)p->bpr * p->height; /* the last row's padding counts */
    if (end > *alloc) return "BAD_GEOMETRY";
    for (uint32_t j = 0; j < i; j++) {
      uint64_t other_end = planes[j].offset + (uint64_t)planes[j].bpr * planes[j].height;
      if (p->offset < other_end && planes[j].offset < end) return "BAD_GEOMETRY";
    }
  }
  for (size_t at = 64 + 24 * (size_t)count; at < HEADER_SIZE; at++)
    if (m[at]) return "BAD_HEADER";
  return NULL;
}

static const char *check_descriptor(int fd, uint64_t alloc) {
  int seals = fcntl(fd, F_GET_SEALS); /* 1. seals, before the size */
  struct stat st;
  if (seals < 0) return "NOT_SHARED_MEMORY";
  if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    if (fstat(fd, &st) < 0) die("fstat");
    return !S_ISREG(st.st_mode) || st.st_nlink > 0 ? "NOT_SHARED_MEMORY" : "UNSEALED";
  }
  if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) return "WRITE_SEALED";
  if (fstat(fd, &st) < 0) die("fstat"); /* 2. the size, final now */
  if (!S_ISREG(st.st_mode)) return "NOT_SHARED_MEMORY";
  if ((uint64_t)st.st_size != alloc) return "SIZE_MISMATCH";
  if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR) return "BAD_ACCESS"; /* 3. access mode */
  struct statfs fs; /* 4. not hugetlbfs */
  if (fstatfs(fd, &fs) < 0) die("fstatfs");
  if ((uint32_t)fs.f_type == HUGETLBFS_MAGIC_NUMBER) return "HUGE_PAGES";
  char path[64]; /* 5. a description of our own to map */
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int mapping_fd = open(path, O_RDWR | O_CLOEXEC);
  if (mapping_fd < 0) {
    if (errno == EACCES || errno == EPERM) return "NO_PERMISSION";
    die("open /proc/self/fd");
  }
  void *p = mmap(NULL, alloc, PROT_READ | PROT_WRITE, MAP_SHARED, mapping_fd, 0);
  int mmap_errno = errno;
  close(mapping_fd);
  if (p == MAP_FAILED) {
    if (mmap_errno == ENOMEM || mmap_errno == EAGAIN) { errno = mmap_errno; die("mmap"); }
    return fcntl(fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) ? "WRITE_SEALED"
                                                                         : "UNMAPPABLE";
  }
  munmap(p, alloc);
  return NULL;
}

static const char *judge(int s) {
  static uint8_t buffer[HEADER_SIZE + MAX_META + 1];
  char control[CMSG_SPACE(sizeof(int) * 8)];
  struct iovec iov = { buffer, sizeof buffer };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control };
  ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) die("recvmsg");
  int fds[8], count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k && count < 8; i++) memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  const char *reason = NULL;
  uint32_t kind = 0;
  uint64_t alloc = 0;
  if (msg.msg_flags & MSG_CTRUNC) reason = "CONTROL_TRUNCATED";
  else if (msg.msg_flags & MSG_TRUNC) reason = "MESSAGE_TRUNCATED";
  else if ((reason = check_header(buffer, (size_t)n, &kind, &alloc))) {}
  else if (count == 0) reason = "NO_HANDLE";
  else if (count > 1) reason = "EXTRA_HANDLES";
  else if ((reason = check_descriptor(fds[0], alloc))) {}
  else if (kind == 2 && !valid_json(buffer + HEADER_SIZE, (size_t)n - HEADER_SIZE)) reason = "BAD_META";
  for (int i = 0; i < count; i++) close(fds[i]);
  return reason ? reason : "ok";
}

static int check_mode(const char *name, long count) {
  int server = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (server < 0) die("socket");
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char full[108];
  int n = snprintf(full, sizeof full, "surfaceport/%s", name);
  memcpy(addr.sun_path + 1, full, (size_t)n);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  if (bind(server, (struct sockaddr *)&addr, len) < 0) die("bind");
  if (listen(server, 1) < 0) die("listen");
  printf("listening\n");
  int s = accept4(server, NULL, NULL, SOCK_CLOEXEC);
  if (s < 0) die("accept");
  for (long k = 0; k < count; k++) printf("%s\n", judge(s));
  printf("done\n");
  close(s);
  close(server);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 4 && !strcmp(argv[1], "check")) return check_mode(argv[2], atol(argv[3]));
  if (argc < 4) {
    fprintf(stderr, "usage: c_peer recv|echo NAME COUNT | produce NAME W H COUNT\n");
    return 2;
  }
  const char *mode = argv[1];
  int s = connect_to(argv[2]);
  printf("connected\n");
  static struct frame f;
  int subscribed = !strcmp(mode, "subscribe") && argc >= 5;
  if (subscribed) send_control(s, 2, !strcmp(argv[3], "queue") ? 2 : 1, 1); /* SUBSCRIBE, depth 1 */
  if (!strcmp(mode, "recv") || !strcmp(mode, "echo") || subscribed) {
    long count = atol(argv[subscribed ? 4 : 3]);
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
      if (subscribed) send_control(s, 3, 0, 1); /* CREDIT 1: done with it, send the next */
    }
  } else if ((!strcmp(mode, "produce") || !strcmp(mode, "produce-ring")) && argc >= 6) {
    if (!strcmp(mode, "produce-ring")) printf(offer_doorbell(s) ? "doorbell\n" : "no doorbell\n");
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
    int ringing = !strcmp(mode, "produce-ring");
    for (long k = 0; k < count; k++) {
      if (ringing) usleep(2000); /* let the receiver park first: then it must be rung */
      apply_pattern(base, &layout, (uint32_t)k, 0);
      wr64(header + 32, (uint64_t)k);
      send_frame(s, header, (uint32_t)k, memfd);
      ring_if_parked();
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
