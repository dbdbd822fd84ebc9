/*
 * A foreign surfaceport peer for macOS, written only from docs/macos.md and
 * docs/protocol.md, to prove that the spec is enough to interoperate with
 * the library over mach ports without its code.
 *
 *   c_peer_macos recv NAME COUNT    connect; receive COUNT frames, verify them
 *   c_peer_macos echo NAME COUNT    connect; receive, verify, write seed+1 into
 *                                   the same surface and send it back
 *   c_peer_macos serve NAME COUNT W H FORMAT
 *                                   listen; accept one client, send COUNT new
 *                                   surfaces (BGRA, L008, 420v or y420), then
 *                                   wait until the client closes
 *
 * The pattern is the one in examples/pattern.ts; the seed travels as 4 bytes
 * of metadata (kind 1). Prints "connected" / "listening", "ok SEQ" per frame
 * and "done"; any failure prints "c_peer_macos: ..." on stderr and exits 1.
 *
 * It uses only libSystem, libbsm, IOSurface and CoreFoundation, and no libc
 * function beyond write, _exit and snprintf, so that it links against the
 * minimal stubs the cross build writes (tests/c_peer_macos_test.ts).
 */
#include <CoreFoundation/CoreFoundation.h>
#include <IOSurface/IOSurfaceRef.h>
#include <bsm/libbsm.h>
#include <mach/mach.h>
#include <mach/notify.h>
#include <servers/bootstrap.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* docs/macos.md: message ids, the handshake payload, the service prefix. */
#define MSG_ID_HELLO 0x53505201
#define MSG_ID_WELCOME 0x53505202
#define MSG_ID_SURFACE 0x53505203
#define SPRT 0x54525053u /* "SPRT" read as a little-endian u32 */
#define PROTOCOL_VERSION 1
#define SERVICE_PREFIX "surfaceport."

/* docs/protocol.md: the platform-neutral header. */
#define HEADER_SIZE 136
#define FOURCC_BGRA 0x42475241u
#define FOURCC_L008 0x4C303038u
#define FOURCC_420V 0x34323076u
#define FOURCC_Y420 0x79343230u
#define META_KIND_BYTES 1
#define MAX_META 65536
#define TIMEOUT_MS 10000

#define RECEIVE_OPTIONS                                                                    \
  (MACH_RCV_MSG | MACH_RCV_TIMEOUT | MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) |   \
   MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT))

typedef struct {
  mach_msg_header_t header;
  uint32_t magic;
  uint16_t version;
  uint16_t reserved;
} handshake_t;

typedef struct {
  mach_msg_header_t header;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t port;
  uint8_t payload[HEADER_SIZE + 4];
} surface_message_t;

/* Big enough for any valid message plus the largest trailer. */
static union {
  mach_msg_header_t header;
  uint8_t bytes[sizeof(surface_message_t) + MAX_META + MAX_TRAILER_SIZE];
} inbox_buffer;

static void say(const char *text) {
  size_t n = 0;
  while (text[n]) n++;
  if (write(1, text, n) < 0) _exit(3);
}

__attribute__((noreturn)) static void die(const char *what, long long code) {
  char line[256];
  int n = snprintf(line, sizeof line, "c_peer_macos: %s (0x%llx)\n", what, code);
  if (n > 0) (void)!write(2, line, (size_t)n);
  _exit(1);
}

static void check(kern_return_t kr, const char *what) {
  if (kr != KERN_SUCCESS) die(what, kr);
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t pattern_byte(uint32_t index, uint32_t plane, uint32_t seed) {
  return (uint8_t)(index * 7u + (index >> 11) * 13u + plane * 101u + seed * 31u);
}

static long to_long(const char *text) {
  long v = 0;
  for (; *text; text++) {
    if (*text < '0' || *text > '9') die("not a number", 0);
    v = v * 10 + (*text - '0');
  }
  return v;
}

/* A bootstrap name_t: SERVICE_PREFIX + name, NUL-terminated, at most 127 bytes. */
static void service_name(name_t out, const char *name) {
  size_t n = 0;
  for (const char *p = SERVICE_PREFIX; *p; p++) out[n++] = *p;
  for (const char *p = name; *p; p++) {
    if (n >= BOOTSTRAP_MAX_NAME_LEN - 1) die("channel name too long", (long long)n);
    out[n++] = *p;
  }
  while (n < BOOTSTRAP_MAX_NAME_LEN) out[n++] = 0;
}

/* A receive right with a no-senders request (sync 1): the peer's end shows up as a notification. */
static mach_port_t allocate_inbox(void) {
  mach_port_t port = MACH_PORT_NULL, previous = MACH_PORT_NULL;
  check(mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, &port), "mach_port_allocate");
  check(mach_port_request_notification(mach_task_self(), port, MACH_NOTIFY_NO_SENDERS, 1, port,
                                       MACH_MSG_TYPE_MAKE_SEND_ONCE, &previous),
        "mach_port_request_notification");
  if (previous != MACH_PORT_NULL) mach_port_deallocate(mach_task_self(), previous);
  return port;
}

/*
 * Receives one message on `port` with an audit trailer; skips (destroys)
 * messages whose sender is not our effective uid. Returns the message and
 * its sender's trailer. A no-senders notification is believed only from the
 * kernel (audit pid 0).
 */
static mach_msg_header_t *receive(mach_port_t port, mach_msg_audit_trailer_t **trailer_out) {
  for (;;) {
    mach_msg_header_t *msg = &inbox_buffer.header;
    kern_return_t kr = mach_msg(msg, RECEIVE_OPTIONS, 0, sizeof inbox_buffer, port, TIMEOUT_MS,
                                MACH_PORT_NULL);
    if (kr == MACH_RCV_TIMED_OUT) die("receive timed out", kr);
    check(kr, "mach_msg(receive)");
    if (msg->msgh_size % 4 != 0 || msg->msgh_size + sizeof(mach_msg_audit_trailer_t) >
                                       sizeof inbox_buffer) {
      mach_msg_destroy(msg);
      die("bad msgh_size", msg->msgh_size);
    }
    mach_msg_audit_trailer_t *trailer =
        (mach_msg_audit_trailer_t *)(inbox_buffer.bytes + msg->msgh_size);
    if (trailer->msgh_trailer_type != MACH_MSG_TRAILER_FORMAT_0 ||
        trailer->msgh_trailer_size < sizeof(mach_msg_audit_trailer_t)) {
      mach_msg_destroy(msg);
      die("no audit trailer", trailer->msgh_trailer_size);
    }
    pid_t pid = audit_token_to_pid(trailer->msgh_audit);
    if (msg->msgh_id == MACH_NOTIFY_NO_SENDERS && pid == 0 &&
        !(msg->msgh_bits & MACH_MSGH_BITS_COMPLEX)) {
      *trailer_out = trailer;
      return msg;
    }
    if (audit_token_to_euid(trailer->msgh_audit) != geteuid()) {
      mach_msg_destroy(msg); /* another user's message: drop it and its rights */
      continue;
    }
    *trailer_out = trailer;
    return msg;
  }
}

static void send_handshake(int id, mach_port_t destination, mach_port_t inbox) {
  handshake_t m;
  m.header.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND);
  m.header.msgh_size = sizeof m;
  m.header.msgh_remote_port = destination;
  m.header.msgh_local_port = inbox;
  m.header.msgh_voucher_port = MACH_PORT_NULL;
  m.header.msgh_id = id;
  m.magic = SPRT;
  m.version = PROTOCOL_VERSION;
  m.reserved = 0;
  check(mach_msg(&m.header, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL,
                 TIMEOUT_MS, MACH_PORT_NULL),
        "mach_msg(send handshake)");
}

/* A received handshake with `id`: returns the send right it carries (the sender's inbox). */
static mach_port_t handshake_reply(mach_msg_header_t *msg, int id) {
  handshake_t *h = (handshake_t *)msg;
  if (msg->msgh_id != id || (msg->msgh_bits & MACH_MSGH_BITS_COMPLEX) ||
      msg->msgh_size != sizeof(handshake_t) || h->magic != SPRT ||
      h->version != PROTOCOL_VERSION ||
      MACH_MSGH_BITS_REMOTE(msg->msgh_bits) != MACH_MSG_TYPE_PORT_SEND ||
      !MACH_PORT_VALID(msg->msgh_remote_port)) {
    return MACH_PORT_NULL;
  }
  return msg->msgh_remote_port;
}

/* Client: look up, HELLO, WELCOME. Returns the listener's inbox; *inbox is ours. */
static mach_port_t connect_to(const char *name, mach_port_t *inbox) {
  name_t service;
  mach_port_t listener = MACH_PORT_NULL;
  service_name(service, name);
  check(bootstrap_look_up(bootstrap_port, service, &listener), "bootstrap_look_up");
  *inbox = allocate_inbox();
  send_handshake(MSG_ID_HELLO, listener, *inbox);
  mach_port_deallocate(mach_task_self(), listener);
  mach_msg_audit_trailer_t *trailer;
  mach_msg_header_t *msg = receive(*inbox, &trailer);
  if (msg->msgh_id == MACH_NOTIFY_NO_SENDERS) die("the listener refused us", 0);
  mach_port_t peer = handshake_reply(msg, MSG_ID_WELCOME);
  if (peer == MACH_PORT_NULL) {
    mach_msg_destroy(msg);
    die("no valid WELCOME", msg->msgh_id);
  }
  say("connected\n");
  return peer;
}

/* Listener: check in, accept one HELLO from our uid, WELCOME. Returns the client's inbox. */
static mach_port_t serve(const char *name, mach_port_t *inbox) {
  name_t service;
  mach_port_t listener = MACH_PORT_NULL;
  service_name(service, name);
  check(bootstrap_check_in(bootstrap_port, service, &listener), "bootstrap_check_in");
  say("listening\n");
  for (;;) {
    mach_msg_audit_trailer_t *trailer;
    mach_msg_header_t *msg = receive(listener, &trailer);
    mach_port_t peer = handshake_reply(msg, MSG_ID_HELLO);
    if (peer == MACH_PORT_NULL) {
      mach_msg_destroy(msg); /* not a HELLO: drop it, keep listening */
      continue;
    }
    *inbox = allocate_inbox();
    send_handshake(MSG_ID_WELCOME, peer, *inbox);
    /* The listening right is no longer needed: destroying it unregisters the name. */
    mach_port_mod_refs(mach_task_self(), listener, MACH_PORT_RIGHT_RECEIVE, -1);
    say("connected\n");
    return peer;
  }
}

struct plane {
  uint64_t offset;
  uint32_t bytes_per_row, width, height, bytes_per_element;
};

struct frame {
  uint32_t fourcc, width, height, plane_count, meta_length, flags;
  uint64_t sequence, alloc_size;
  struct plane planes[3];
  uint32_t seed;
};

/* Parses and checks the wire header and a 4-byte seed (docs/protocol.md). */
static void parse_frame(const uint8_t *payload, uint32_t length, struct frame *f) {
  if (length < HEADER_SIZE || rd32(payload) != SPRT || rd16(payload + 4) != 1 ||
      rd16(payload + 6) != 1 || rd16(payload + 8) != HEADER_SIZE) {
    die("bad wire header", length);
  }
  f->flags = rd16(payload + 10);
  f->fourcc = rd32(payload + 12);
  f->width = rd32(payload + 16);
  f->height = rd32(payload + 20);
  f->plane_count = rd32(payload + 24);
  f->meta_length = rd32(payload + 28);
  f->sequence = rd64(payload + 32);
  f->alloc_size = rd64(payload + 48);
  if (f->plane_count < 1 || f->plane_count > 3) die("bad plane count", f->plane_count);
  if ((f->flags & 3) != META_KIND_BYTES || f->meta_length != 4 ||
      length < HEADER_SIZE + f->meta_length) {
    die("expected 4 bytes of metadata (the seed)", f->meta_length);
  }
  for (uint32_t i = 0; i < f->plane_count; i++) {
    const uint8_t *r = payload + 64 + 24 * i;
    f->planes[i].offset = rd64(r);
    f->planes[i].bytes_per_row = rd32(r + 8);
    f->planes[i].width = rd32(r + 12);
    f->planes[i].height = rd32(r + 16);
    f->planes[i].bytes_per_element = rd32(r + 20);
    if (f->planes[i].offset + (uint64_t)f->planes[i].bytes_per_row * f->planes[i].height >
        f->alloc_size) {
      die("plane outside allocSize", i);
    }
  }
  f->seed = rd32(payload + HEADER_SIZE);
}

/* The surface's own layout must hold the header's (the header is what views are made from). */
static void check_layout(IOSurfaceRef s, const struct frame *f) {
  if (IOSurfaceGetPixelFormat(s) != f->fourcc || IOSurfaceGetWidth(s) != f->width ||
      IOSurfaceGetHeight(s) != f->height || IOSurfaceGetAllocSize(s) < f->alloc_size) {
    die("the IOSurface does not match the header", IOSurfaceGetPixelFormat(s));
  }
}

/* Checks (verify=1) or writes (verify=0) the pattern; returns mismatches. */
static long apply_pattern(IOSurfaceRef s, const struct frame *f, uint32_t seed, int verify) {
  long bad = 0;
  uint32_t seedless = 0;
  check(IOSurfaceLock(s, verify ? kIOSurfaceLockReadOnly : 0, &seedless), "IOSurfaceLock");
  uint8_t *base = IOSurfaceGetBaseAddress(s);
  for (uint32_t p = 0; p < f->plane_count; p++) {
    uint8_t *plane = base + f->planes[p].offset;
    uint32_t length = f->planes[p].bytes_per_row * f->planes[p].height;
    for (uint32_t i = 0; i < length; i++) {
      uint8_t want = pattern_byte(i, p, seed);
      if (verify) bad += plane[i] != want;
      else plane[i] = want;
    }
  }
  check(IOSurfaceUnlock(s, verify ? kIOSurfaceLockReadOnly : 0, &seedless), "IOSurfaceUnlock");
  return bad;
}

/*
 * Receives one surface message: returns the IOSurface (+1) and the send
 * right it came as (which keeps it in use until deallocated), or 0 when the
 * peer closed (a no-senders notification).
 */
static IOSurfaceRef receive_frame(mach_port_t inbox, struct frame *f, mach_port_t *right) {
  mach_msg_audit_trailer_t *trailer;
  mach_msg_header_t *msg = receive(inbox, &trailer);
  if (msg->msgh_id == MACH_NOTIFY_NO_SENDERS) return NULL;
  surface_message_t *m = (surface_message_t *)msg;
  uint32_t payload_offset = (uint32_t)offsetof(surface_message_t, payload);
  if (msg->msgh_id != MSG_ID_SURFACE || !(msg->msgh_bits & MACH_MSGH_BITS_COMPLEX) ||
      msg->msgh_size < payload_offset || m->body.msgh_descriptor_count != 1 ||
      m->port.type != MACH_MSG_PORT_DESCRIPTOR ||
      m->port.disposition != MACH_MSG_TYPE_PORT_SEND || !MACH_PORT_VALID(m->port.name) ||
      msg->msgh_remote_port != MACH_PORT_NULL) {
    mach_msg_destroy(msg);
    die("not a surface message", msg->msgh_id);
  }
  parse_frame(m->payload, msg->msgh_size - payload_offset, f);
  if (msg->msgh_size != ((payload_offset + HEADER_SIZE + f->meta_length + 3) & ~3u)) {
    mach_msg_destroy(msg);
    die("msgh_size does not match the header", msg->msgh_size);
  }
  *right = m->port.name;
  IOSurfaceRef s = IOSurfaceLookupFromMachPort(*right);
  if (s == NULL) die("IOSurfaceLookupFromMachPort", *right);
  check_layout(s, f);
  return s;
}

/* The wire header for a surface whose real layout is read back from IOSurface. */
static uint32_t encode_header(uint8_t *out, IOSurfaceRef s, uint64_t sequence, uint32_t seed) {
  for (int i = 0; i < HEADER_SIZE; i++) out[i] = 0;
  uint32_t fourcc = IOSurfaceGetPixelFormat(s);
  size_t planes = IOSurfaceGetPlaneCount(s);
  uint8_t *base = IOSurfaceGetBaseAddress(s);
  wr32(out, SPRT);
  wr16(out + 4, 1);
  wr16(out + 6, 1);
  wr16(out + 8, HEADER_SIZE);
  wr16(out + 10, META_KIND_BYTES);
  wr32(out + 12, fourcc);
  wr32(out + 16, (uint32_t)IOSurfaceGetWidth(s));
  wr32(out + 20, (uint32_t)IOSurfaceGetHeight(s));
  wr32(out + 24, planes == 0 ? 1 : (uint32_t)planes);
  wr32(out + 28, 4);
  wr64(out + 32, sequence);
  wr64(out + 40, 0); /* timestamp: optional for this peer */
  wr64(out + 48, IOSurfaceGetAllocSize(s));
  if (planes == 0) {
    uint8_t *r = out + 64;
    wr64(r, 0);
    wr32(r + 8, (uint32_t)IOSurfaceGetBytesPerRow(s));
    wr32(r + 12, (uint32_t)IOSurfaceGetWidth(s));
    wr32(r + 16, (uint32_t)IOSurfaceGetHeight(s));
    wr32(r + 20, (uint32_t)IOSurfaceGetBytesPerElement(s));
  }
  for (size_t i = 0; i < planes && i < 3; i++) {
    uint8_t *r = out + 64 + 24 * i;
    wr64(r, (uint64_t)((uint8_t *)IOSurfaceGetBaseAddressOfPlane(s, i) - base));
    wr32(r + 8, (uint32_t)IOSurfaceGetBytesPerRowOfPlane(s, i));
    wr32(r + 12, (uint32_t)IOSurfaceGetWidthOfPlane(s, i));
    wr32(r + 16, (uint32_t)IOSurfaceGetHeightOfPlane(s, i));
    wr32(r + 20, (uint32_t)IOSurfaceGetBytesPerElementOfPlane(s, i));
  }
  wr32(out + HEADER_SIZE, seed);
  return HEADER_SIZE + 4;
}

/* Sends `s` to `peer` as a new send right (MOVE_SEND) in a port descriptor. */
static void send_frame(mach_port_t peer, IOSurfaceRef s, uint64_t sequence, uint32_t seed) {
  static surface_message_t m;
  uint32_t payload = encode_header(m.payload, s, sequence, seed);
  m.header.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0) | MACH_MSGH_BITS_COMPLEX;
  m.header.msgh_size = (mach_msg_size_t)((offsetof(surface_message_t, payload) + payload + 3) & ~3u);
  m.header.msgh_remote_port = peer;
  m.header.msgh_local_port = MACH_PORT_NULL;
  m.header.msgh_voucher_port = MACH_PORT_NULL;
  m.header.msgh_id = MSG_ID_SURFACE;
  m.body.msgh_descriptor_count = 1;
  m.port.name = IOSurfaceCreateMachPort(s);
  if (!MACH_PORT_VALID(m.port.name)) die("IOSurfaceCreateMachPort", m.port.name);
  m.port.pad1 = 0;
  m.port.pad2 = 0;
  m.port.disposition = MACH_MSG_TYPE_MOVE_SEND;
  m.port.type = MACH_MSG_PORT_DESCRIPTOR;
  check(mach_msg(&m.header, MACH_SEND_MSG | MACH_SEND_TIMEOUT, m.header.msgh_size, 0,
                 MACH_PORT_NULL, TIMEOUT_MS, MACH_PORT_NULL),
        "mach_msg(send surface)");
}

static void set_number(CFMutableDictionaryRef d, CFStringRef key, long long value) {
  CFNumberRef n = CFNumberCreate(NULL, kCFNumberSInt64Type, &value);
  if (n == NULL) die("CFNumberCreate", value);
  CFDictionarySetValue(d, key, n);
  CFRelease(n);
}

static CFMutableDictionaryRef dictionary(void) {
  CFMutableDictionaryRef d = CFDictionaryCreateMutable(NULL, 0, &kCFTypeDictionaryKeyCallBacks,
                                                       &kCFTypeDictionaryValueCallBacks);
  if (d == NULL) die("CFDictionaryCreateMutable", 0);
  return d;
}

/* A new IOSurface of `fourcc`, rows and planes aligned as IOSurface asks (IOSurfaceAlignProperty). */
static IOSurfaceRef create_surface(uint32_t fourcc, uint32_t w, uint32_t h) {
  uint32_t count, bpe[3], pw[3], ph[3];
  switch (fourcc) {
  case FOURCC_BGRA: count = 1; bpe[0] = 4; pw[0] = w; ph[0] = h; break;
  case FOURCC_L008: count = 1; bpe[0] = 1; pw[0] = w; ph[0] = h; break;
  case FOURCC_420V:
    count = 2; bpe[0] = 1; pw[0] = w; ph[0] = h; bpe[1] = 2; pw[1] = w / 2; ph[1] = h / 2;
    break;
  case FOURCC_Y420:
    count = 3; bpe[0] = 1; pw[0] = w; ph[0] = h;
    for (int i = 1; i < 3; i++) { bpe[i] = 1; pw[i] = w / 2; ph[i] = h / 2; }
    break;
  default: die("unsupported format", fourcc);
  }
  CFMutableDictionaryRef props = dictionary();
  set_number(props, kIOSurfaceWidth, w);
  set_number(props, kIOSurfaceHeight, h);
  set_number(props, kIOSurfacePixelFormat, fourcc);
  size_t offset = 0;
  if (count == 1) {
    size_t bpr = IOSurfaceAlignProperty(kIOSurfaceBytesPerRow, (size_t)w * bpe[0]);
    set_number(props, kIOSurfaceBytesPerElement, bpe[0]);
    set_number(props, kIOSurfaceBytesPerRow, (long long)bpr);
    offset = bpr * h;
  } else {
    CFMutableArrayRef planes = CFArrayCreateMutable(NULL, 0, &kCFTypeArrayCallBacks);
    if (planes == NULL) die("CFArrayCreateMutable", 0);
    for (uint32_t i = 0; i < count; i++) {
      size_t bpr = IOSurfaceAlignProperty(kIOSurfacePlaneBytesPerRow, (size_t)pw[i] * bpe[i]);
      offset = IOSurfaceAlignProperty(kIOSurfacePlaneOffset, offset);
      CFMutableDictionaryRef plane = dictionary();
      set_number(plane, kIOSurfacePlaneWidth, pw[i]);
      set_number(plane, kIOSurfacePlaneHeight, ph[i]);
      set_number(plane, kIOSurfacePlaneBytesPerElement, bpe[i]);
      set_number(plane, kIOSurfacePlaneBytesPerRow, (long long)bpr);
      set_number(plane, kIOSurfacePlaneOffset, (long long)offset);
      set_number(plane, kIOSurfacePlaneSize, (long long)(bpr * ph[i]));
      CFArrayAppendValue(planes, plane);
      CFRelease(plane);
      offset += bpr * ph[i];
    }
    CFDictionarySetValue(props, kIOSurfacePlaneInfo, planes);
    CFRelease(planes);
  }
  set_number(props, kIOSurfaceAllocSize, (long long)IOSurfaceAlignProperty(kIOSurfaceAllocSize, offset));
  IOSurfaceRef s = IOSurfaceCreate(props);
  CFRelease(props);
  if (s == NULL) die("IOSurfaceCreate", fourcc);
  return s;
}

static uint32_t fourcc_of(const char *text) {
  uint32_t v = 0;
  int n = 0;
  for (; text[n]; n++) v = v << 8 | (uint8_t)text[n];
  if (n != 4) die("a format is four characters", n);
  return v;
}

int main(int argc, char **argv) {
  char line[96];
  if (argc < 4) {
    say("usage: c_peer_macos recv|echo NAME COUNT | serve NAME COUNT W H FORMAT\n");
    return 2;
  }
  const char *mode = argv[1];
  long count = to_long(argv[3]);
  mach_port_t inbox = MACH_PORT_NULL, peer = MACH_PORT_NULL;
  if (mode[0] == 'r' || mode[0] == 'e') {
    int echo = mode[0] == 'e';
    peer = connect_to(argv[2], &inbox);
    for (long k = 0; k < count; k++) {
      struct frame f;
      mach_port_t right;
      IOSurfaceRef s = receive_frame(inbox, &f, &right);
      if (s == NULL) die("the peer closed early", k);
      long bad = apply_pattern(s, &f, f.seed, 1);
      if (bad != 0) die("pattern mismatch", bad);
      if (echo) {
        apply_pattern(s, &f, f.seed + 1, 0);
        send_frame(peer, s, (uint64_t)k, f.seed + 1);
      }
      CFRelease(s);
      mach_port_deallocate(mach_task_self(), right); /* the frame is closed: its use ends */
      int n = snprintf(line, sizeof line, "ok %llu\n", (unsigned long long)f.sequence);
      if (n > 0) say(line);
    }
  } else if (mode[0] == 's' && argc == 7) {
    uint32_t w = (uint32_t)to_long(argv[4]), h = (uint32_t)to_long(argv[5]);
    uint32_t fourcc = fourcc_of(argv[6]);
    peer = serve(argv[2], &inbox);
    for (long k = 0; k < count; k++) {
      IOSurfaceRef s = create_surface(fourcc, w, h);
      uint8_t header[HEADER_SIZE + 4];
      encode_header(header, s, (uint64_t)k, (uint32_t)k);
      struct frame f;
      parse_frame(header, sizeof header, &f);
      apply_pattern(s, &f, (uint32_t)k, 0);
      send_frame(peer, s, (uint64_t)k, (uint32_t)k);
      CFRelease(s); /* the message's right keeps it alive for the receiver */
      int n = snprintf(line, sizeof line, "ok %ld\n", k);
      if (n > 0) say(line);
    }
    /* Wait for the client to close: its end arrives as a no-senders notification. */
    struct frame f;
    mach_port_t right;
    if (receive_frame(inbox, &f, &right) != NULL) die("expected the client to close", 0);
  } else {
    die("unknown mode", 0);
  }
  mach_port_deallocate(mach_task_self(), peer);
  mach_port_mod_refs(mach_task_self(), inbox, MACH_PORT_RIGHT_RECEIVE, -1);
  say("done\n");
  return 0;
}
