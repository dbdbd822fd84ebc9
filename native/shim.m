// surfaceport's macOS shim: only what FFI cannot do well.
//
// Deno FFI calls libSystem, CoreFoundation, IOSurface and CoreVideo
// directly; the one thing it cannot do is see the SDK headers. This shim is
// compiled against them on the user's (or CI's) Mac and reports the sizes,
// offsets and constants the TypeScript writes with, so that the library
// refuses to run (AbiMismatchError) instead of corrupting memory if they
// ever differ. src/darwin/abi.ts (EXPECTED_ABI) holds the other side of
// the comparison; the keys must match exactly.
//
// Build: make -C native   (universal arm64 + x86_64, MACOSX_DEPLOYMENT_TARGET=11.0)

#include <CoreFoundation/CoreFoundation.h>
#include <CoreVideo/CoreVideo.h>
#include <IOSurface/IOSurfaceRef.h>
#include <bsm/libbsm.h>
#include <dispatch/dispatch.h>
#include <mach/mach.h>
#include <mach/message.h>
#include <mach/notify.h>
#include <servers/bootstrap.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define SP_EXPORT __attribute__((visibility("default")))
#define SP_ABI_REPORT_VERSION 1

static char report[8192];
static size_t used;

static void put(const char *key, long long value) {
  if (used >= sizeof report) return;
  int n = snprintf(report + used, sizeof report - used, "%s\"%s\":%lld",
                   used > 1 ? "," : "", key, value);
  if (n > 0) used += (size_t)n;
}

#define SIZE(type) put("sizeof(" #type ")", (long long)sizeof(type))
#define OFFSET(type, field) put("offsetof(" #type ", " #field ")", (long long)offsetof(type, field))
#define CONSTANT(name) put(#name, (long long)(name))

// disposition and type are 8-bit bitfields: offsetof cannot take them, so
// find the byte each one lands in.
static long long descriptor_byte(int which) {
  mach_msg_port_descriptor_t d;
  memset(&d, 0, sizeof d);
  if (which == 0) d.disposition = 0xAB;
  else d.type = 0xCD;
  const unsigned char *bytes = (const unsigned char *)&d;
  for (size_t i = 0; i < sizeof d; i++) {
    if (bytes[i] == (which == 0 ? 0xAB : 0xCD)) return (long long)i;
  }
  return -1;
}

// Which audit_token_t.val index the libbsm accessors read.
static audit_token_t numbered_token(void) {
  audit_token_t token;
  for (int i = 0; i < 8; i++) token.val[i] = 1000 + (unsigned)i;
  return token;
}

static void build(void *context) {
  (void)context;
  used = 0;
  used += (size_t)snprintf(report, sizeof report, "{");
  put("version", SP_ABI_REPORT_VERSION);

  SIZE(mach_port_t);
  SIZE(mach_msg_header_t);
  OFFSET(mach_msg_header_t, msgh_bits);
  OFFSET(mach_msg_header_t, msgh_size);
  OFFSET(mach_msg_header_t, msgh_remote_port);
  OFFSET(mach_msg_header_t, msgh_local_port);
  OFFSET(mach_msg_header_t, msgh_voucher_port);
  OFFSET(mach_msg_header_t, msgh_id);
  SIZE(mach_msg_body_t);
  SIZE(mach_msg_base_t);
  SIZE(mach_msg_port_descriptor_t);
  OFFSET(mach_msg_port_descriptor_t, name);
  put("offsetof(mach_msg_port_descriptor_t, disposition)", descriptor_byte(0));
  put("offsetof(mach_msg_port_descriptor_t, type)", descriptor_byte(1));
  SIZE(mach_msg_ool_descriptor_t);
  SIZE(mach_msg_trailer_t);
  SIZE(mach_msg_audit_trailer_t);
  OFFSET(mach_msg_audit_trailer_t, msgh_seqno);
  OFFSET(mach_msg_audit_trailer_t, msgh_sender);
  OFFSET(mach_msg_audit_trailer_t, msgh_audit);
  SIZE(audit_token_t);
  put("audit_token_to_euid index", (long long)audit_token_to_euid(numbered_token()) - 1000);
  put("audit_token_to_egid index", (long long)audit_token_to_egid(numbered_token()) - 1000);
  put("audit_token_to_pid index", (long long)audit_token_to_pid(numbered_token()) - 1000);
  CONSTANT(MAX_TRAILER_SIZE);

  CONSTANT(MACH_MSG_TYPE_MOVE_SEND);
  CONSTANT(MACH_MSG_TYPE_COPY_SEND);
  CONSTANT(MACH_MSG_TYPE_MAKE_SEND);
  CONSTANT(MACH_MSG_TYPE_MAKE_SEND_ONCE);
  CONSTANT(MACH_MSG_TYPE_PORT_SEND);
  CONSTANT(MACH_MSG_TYPE_PORT_SEND_ONCE);
  CONSTANT(MACH_MSG_PORT_DESCRIPTOR);
  put("MACH_MSGH_BITS_COMPLEX", (long long)(unsigned)MACH_MSGH_BITS_COMPLEX);
  put("MACH_MSGH_BITS(COPY_SEND, MAKE_SEND)",
      (long long)(unsigned)MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND));
  CONSTANT(MACH_SEND_MSG);
  CONSTANT(MACH_RCV_MSG);
  CONSTANT(MACH_SEND_TIMEOUT);
  CONSTANT(MACH_RCV_TIMEOUT);
  put("MACH_RCV_MSG|MACH_RCV_TRAILER_TYPE(0)|MACH_RCV_TRAILER_ELEMENTS(AUDIT)",
      (long long)(unsigned)(MACH_RCV_MSG | MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) |
                            MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT)));
  CONSTANT(MACH_PORT_RIGHT_SEND);
  CONSTANT(MACH_PORT_RIGHT_RECEIVE);
  CONSTANT(MACH_NOTIFY_NO_SENDERS);
  CONSTANT(MACH_SEND_INVALID_DEST);
  CONSTANT(MACH_SEND_TIMED_OUT);
  CONSTANT(MACH_RCV_TIMED_OUT);
  CONSTANT(MACH_RCV_TOO_LARGE);
  CONSTANT(MACH_RCV_PORT_DIED);
  // The shared port-set wait (src/darwin/mach.ts, PortWaitSet) and hostile-body handling.
  CONSTANT(MACH_RCV_LARGE);
  CONSTANT(MACH_RCV_LARGE_IDENTITY);
  CONSTANT(MACH_RCV_INTERRUPTED);
  CONSTANT(MACH_RCV_BODY_ERROR);
  CONSTANT(MACH_MSG_MASK);
  CONSTANT(MACH_MSG_OOL_DESCRIPTOR);
  CONSTANT(MACH_PORT_RIGHT_PORT_SET);
  CONSTANT(KERN_ALREADY_IN_SET);
  CONSTANT(KERN_NOT_IN_SET);
  CONSTANT(BOOTSTRAP_MAX_NAME_LEN);
  CONSTANT(BOOTSTRAP_UNKNOWN_SERVICE);
  CONSTANT(BOOTSTRAP_SERVICE_ACTIVE);

  CONSTANT(kIOSurfaceLockReadOnly);
  CONSTANT(kCVPixelBufferLock_ReadOnly);
  CONSTANT(kCFNumberSInt64Type);
  CONSTANT(kCFStringEncodingUTF8);
  SIZE(CVOptionFlags);
  SIZE(CFIndex);

  if (used < sizeof report - 2) {
    report[used++] = '}';
    report[used] = '\0';
  } else {
    snprintf(report, sizeof report, "{\"version\":-1}"); // overflow: makes the check fail loudly
  }
}

// A static NUL-terminated JSON object: {"version":1,"sizeof(mach_port_t)":4,...}.
// Built once; never freed; safe to call from any thread.
SP_EXPORT const char *sp_abi_report(void) {
  static dispatch_once_t once;
  dispatch_once_f(&once, NULL, build);
  return report;
}
