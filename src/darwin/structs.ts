/**
 * Byte layouts of the Mach structs surfaceport writes and reads, as small
 * pure codecs with explicit offsets, and the constants the macOS backend
 * uses. Every number comes from `mach/message.h`, `mach/port.h`,
 * `mach/kern_return.h`, `mach/notify.h`, `servers/bootstrap.h`, IOSurface
 * and CoreVideo headers (x86_64 and arm64 agree on all of them). Everything in
 * `mach/message.h` is `#pragma pack(4)`: no field is 8-aligned.
 *
 * `tests/darwin_structs_test.ts` pins these codecs to golden bytes, and the
 * native shim (`native/shim.m`) reports the same numbers from the real SDK on
 * load; `compareAbiReport` in `abi.ts` (which holds `EXPECTED_ABI`) refuses
 * to run on any difference.
 *
 * @module
 */

/** Constants from the Darwin headers, as the TypeScript uses them. */
export const DARWIN = {
  // mach/message.h — dispositions (a received right's type uses the same numbers as PORT_*)
  MACH_MSG_TYPE_MOVE_RECEIVE: 16,
  MACH_MSG_TYPE_MOVE_SEND: 17,
  MACH_MSG_TYPE_MOVE_SEND_ONCE: 18,
  MACH_MSG_TYPE_COPY_SEND: 19,
  MACH_MSG_TYPE_MAKE_SEND: 20,
  MACH_MSG_TYPE_MAKE_SEND_ONCE: 21,
  /** `MACH_MSG_TYPE_PORT_SEND` (= MOVE_SEND): the type of a received send right. */
  MACH_MSG_TYPE_PORT_SEND: 17,
  /** `MACH_MSG_TYPE_PORT_SEND_ONCE` (= MOVE_SEND_ONCE). */
  MACH_MSG_TYPE_PORT_SEND_ONCE: 18,
  /** `MACH_MSG_TYPE_PORT_RECEIVE` (= MOVE_RECEIVE). */
  MACH_MSG_TYPE_PORT_RECEIVE: 16,
  MACH_MSG_PORT_DESCRIPTOR: 0,
  MACH_MSG_OOL_DESCRIPTOR: 1,
  MACH_MSG_OOL_PORTS_DESCRIPTOR: 2,
  MACH_MSG_OOL_VOLATILE_DESCRIPTOR: 3,
  MACH_MSG_GUARDED_PORT_DESCRIPTOR: 4,
  /** `mach_msg_copy_options_t`: the sender's memory is copied (received `deallocate` is 0). */
  MACH_MSG_PHYSICAL_COPY: 0,
  /** `mach_msg_copy_options_t`: copy-on-write (the only option XNU copies out with `deallocate` 1). */
  MACH_MSG_VIRTUAL_COPY: 1,
  MACH_MSGH_BITS_COMPLEX: 0x80000000,
  MACH_MSGH_BITS_REMOTE_MASK: 0x1f,
  MACH_MSGH_BITS_LOCAL_MASK: 0x1f00,
  MACH_MSGH_BITS_VOUCHER_MASK: 0x1f0000,
  MACH_SEND_MSG: 0x1,
  MACH_RCV_MSG: 0x2,
  MACH_RCV_LARGE: 0x4,
  /** With `MACH_RCV_LARGE`: a too-large message also reports the member port it waits on. */
  MACH_RCV_LARGE_IDENTITY: 0x8,
  MACH_SEND_TIMEOUT: 0x10,
  /** With a full queue: arm the send-possible request registered on the destination name. */
  MACH_SEND_NOTIFY: 0x80,
  MACH_SEND_INTERRUPT: 0x40,
  MACH_RCV_TIMEOUT: 0x100,
  MACH_RCV_INTERRUPT: 0x400,
  /** The "special bits" a `mach_msg_return_t` may carry (`MACH_MSG_IPC_SPACE` ... `MACH_MSG_VM_KERNEL`). */
  MACH_MSG_MASK: 0x3e00,
  MACH_MSG_IPC_SPACE: 0x2000,
  MACH_MSG_VM_SPACE: 0x1000,
  MACH_MSG_IPC_KERNEL: 0x800,
  MACH_MSG_VM_KERNEL: 0x400,
  MACH_MSG_TIMEOUT_NONE: 0,
  MACH_RCV_TRAILER_NULL: 0,
  MACH_RCV_TRAILER_SEQNO: 1,
  MACH_RCV_TRAILER_SENDER: 2,
  MACH_RCV_TRAILER_AUDIT: 3,
  MACH_RCV_TRAILER_CTX: 4,
  MAX_TRAILER_SIZE: 68,
  // mach/port.h
  MACH_PORT_NULL: 0,
  MACH_PORT_DEAD: 0xffffffff,
  MACH_PORT_RIGHT_SEND: 0,
  MACH_PORT_RIGHT_RECEIVE: 1,
  MACH_PORT_RIGHT_SEND_ONCE: 2,
  MACH_PORT_RIGHT_PORT_SET: 3,
  MACH_PORT_RIGHT_DEAD_NAME: 4,
  /** `mach_port_flavor_t` of `mach_port_set_attributes` for a `mach_port_limits_t` (the queue limit). */
  MACH_PORT_LIMITS_INFO: 1,
  /** `integer_t`s in a `mach_port_limits_t`. */
  MACH_PORT_LIMITS_INFO_COUNT: 1,
  /** A new port's queue limit (`MACH_PORT_QLIMIT_BASIC`). */
  MACH_PORT_QLIMIT_DEFAULT: 5,
  /** The largest queue limit `mach_port_set_attributes` accepts (`MACH_PORT_QLIMIT_LARGE`). */
  MACH_PORT_QLIMIT_MAX: 1024,
  /** `MACH_PORT_TYPE(MACH_PORT_RIGHT_SEND)` = 1 << (0 + 16) (`mach_port_type` bits) */
  MACH_PORT_TYPE_SEND: 0x10000,
  /** `MACH_PORT_TYPE(MACH_PORT_RIGHT_RECEIVE)` = 1 << (1 + 16) */
  MACH_PORT_TYPE_RECEIVE: 0x20000,
  // mach/notify.h (MACH_NOTIFY_FIRST 0100 + n)
  MACH_NOTIFY_PORT_DELETED: 65,
  MACH_NOTIFY_PORT_DESTROYED: 69,
  MACH_NOTIFY_SEND_POSSIBLE: 66,
  MACH_NOTIFY_NO_SENDERS: 70,
  MACH_NOTIFY_SEND_ONCE: 71,
  MACH_NOTIFY_DEAD_NAME: 72,
  // mach/kern_return.h
  KERN_SUCCESS: 0,
  KERN_INVALID_ADDRESS: 1,
  KERN_NO_SPACE: 3,
  KERN_INVALID_ARGUMENT: 4,
  KERN_FAILURE: 5,
  KERN_RESOURCE_SHORTAGE: 6,
  KERN_ALREADY_IN_SET: 11,
  KERN_NOT_IN_SET: 12,
  KERN_NAME_EXISTS: 13,
  KERN_INVALID_NAME: 15,
  KERN_INVALID_TASK: 16,
  KERN_INVALID_RIGHT: 17,
  KERN_INVALID_VALUE: 18,
  KERN_UREFS_OVERFLOW: 19,
  KERN_RIGHT_EXISTS: 21,
  // mach/message.h — mach_msg_return_t
  /** The first `mach_msg_return_t` of a send (internal use only); sends fail with the values after it. */
  MACH_SEND_IN_PROGRESS: 0x10000001,
  MACH_SEND_INVALID_DATA: 0x10000002,
  MACH_SEND_INVALID_DEST: 0x10000003,
  MACH_SEND_TIMED_OUT: 0x10000004,
  MACH_SEND_INTERRUPTED: 0x10000007,
  MACH_SEND_MSG_TOO_SMALL: 0x10000008,
  MACH_SEND_INVALID_REPLY: 0x10000009,
  MACH_SEND_INVALID_RIGHT: 0x1000000a,
  MACH_SEND_INVALID_MEMORY: 0x1000000c,
  MACH_SEND_NO_BUFFER: 0x1000000d,
  MACH_SEND_TOO_LARGE: 0x1000000e,
  MACH_SEND_INVALID_HEADER: 0x10000010,
  MACH_SEND_INVALID_OPTIONS: 0x10000013,
  /** The first `mach_msg_return_t` of a receive (internal use only). */
  MACH_RCV_IN_PROGRESS: 0x10004001,
  MACH_RCV_INVALID_NAME: 0x10004002,
  MACH_RCV_TIMED_OUT: 0x10004003,
  MACH_RCV_TOO_LARGE: 0x10004004,
  MACH_RCV_INTERRUPTED: 0x10004005,
  MACH_RCV_INVALID_DATA: 0x10004008,
  MACH_RCV_PORT_DIED: 0x10004009,
  MACH_RCV_PORT_CHANGED: 0x10004006,
  MACH_RCV_HEADER_ERROR: 0x1000400b,
  MACH_RCV_BODY_ERROR: 0x1000400c,
  MACH_RCV_INVALID_TRAILER: 0x1000400f,
  MACH_RCV_INVALID_ARGUMENTS: 0x10004013,
  // servers/bootstrap.h
  BOOTSTRAP_SUCCESS: 0,
  BOOTSTRAP_NOT_PRIVILEGED: 1100,
  BOOTSTRAP_NAME_IN_USE: 1101,
  BOOTSTRAP_UNKNOWN_SERVICE: 1102,
  BOOTSTRAP_SERVICE_ACTIVE: 1103,
  BOOTSTRAP_BAD_COUNT: 1104,
  BOOTSTRAP_NO_MEMORY: 1105,
  BOOTSTRAP_NO_CHILDREN: 1106,
  BOOTSTRAP_MAX_NAME_LEN: 128,
  // sys/errno.h — what kill(pid, 0) answers (the registry's liveness check)
  EPERM: 1,
  ESRCH: 3,
  // IOKit / IOSurface
  kIOReturnSuccess: 0,
  kIOReturnError: -536870212,
  kIOReturnBadArgument: -536870206,
  kIOReturnCannotLock: -536870196,
  kIOSurfaceLockReadOnly: 1,
  kIOSurfaceLockAvoidSync: 2,
  // CoreVideo / CoreFoundation
  kCVReturnSuccess: 0,
  kCVPixelBufferLock_ReadOnly: 1,
  kCFNumberSInt32Type: 3,
  kCFNumberSInt64Type: 4,
  kCFStringEncodingUTF8: 0x08000100,
} as const;

/** `MACH_MSGH_BITS(remote, local)`: the disposition bits of a header. */
export function machMsghBits(remote: number, local: number): number {
  return (remote | (local << 8)) >>> 0;
}

/** `MACH_MSGH_BITS_REMOTE(bits)` */
export function msghBitsRemote(bits: number): number {
  return bits & DARWIN.MACH_MSGH_BITS_REMOTE_MASK;
}

/** `MACH_MSGH_BITS_LOCAL(bits)` */
export function msghBitsLocal(bits: number): number {
  return (bits & DARWIN.MACH_MSGH_BITS_LOCAL_MASK) >>> 8;
}

/** True if `MACH_MSGH_BITS_COMPLEX` is set. */
export function msghIsComplex(bits: number): boolean {
  return (bits & DARWIN.MACH_MSGH_BITS_COMPLEX) !== 0;
}

/** `MACH_RCV_TRAILER_TYPE(x)` */
export function machRcvTrailerType(x: number): number {
  return ((x & 0xf) << 28) >>> 0;
}

/** `MACH_RCV_TRAILER_ELEMENTS(x)` */
export function machRcvTrailerElements(x: number): number {
  return ((x & 0xf) << 24) >>> 0;
}

/**
 * The receive option surfaceport always uses: `MACH_RCV_MSG` with a format-0
 * audit trailer (`0x03000002`). No `MACH_RCV_LARGE`: a message too large for
 * the buffer (which holds the largest valid message plus the trailer) is
 * destroyed by the kernel with its rights, and reported as
 * `MACH_RCV_TOO_LARGE`, so a hostile sender cannot wedge the queue.
 */
export const RECEIVE_OPTIONS = (DARWIN.MACH_RCV_MSG | machRcvTrailerType(0) |
  machRcvTrailerElements(DARWIN.MACH_RCV_TRAILER_AUDIT)) >>> 0;

// --- mach_msg_header_t ------------------------------------------------------

/** `sizeof(mach_msg_header_t)` */
export const MACH_MSG_HEADER_SIZE = 24;

/** The fields of a `mach_msg_header_t`. */
export interface MachMsgHeader {
  /** `msgh_bits`: dispositions (remote, local, voucher) and `MACH_MSGH_BITS_COMPLEX`. */
  bits: number;
  /** `msgh_size`: bytes of the message (header included, trailer excluded). */
  size: number;
  /** `msgh_remote_port`: destination on send, reply right on receive. */
  remotePort: number;
  /** `msgh_local_port`: reply port on send, the receiving port on receive. */
  localPort: number;
  /** `msgh_voucher_port` */
  voucherPort: number;
  /** `msgh_id` (signed). */
  id: number;
}

/**
 * Writes a `mach_msg_header_t` at `offset`: bits@0 u32, size@4 u32,
 * remote_port@8 u32, local_port@12 u32, voucher_port@16 u32, id@20 i32.
 */
export function encodeMachMsgHeader(view: DataView, offset: number, h: MachMsgHeader): void {
  view.setUint32(offset + 0, h.bits >>> 0, true);
  view.setUint32(offset + 4, h.size >>> 0, true);
  view.setUint32(offset + 8, h.remotePort >>> 0, true);
  view.setUint32(offset + 12, h.localPort >>> 0, true);
  view.setUint32(offset + 16, h.voucherPort >>> 0, true);
  view.setInt32(offset + 20, h.id | 0, true);
}

/** Reads a `mach_msg_header_t` at `offset`. */
export function decodeMachMsgHeader(view: DataView, offset = 0): MachMsgHeader {
  return {
    bits: view.getUint32(offset + 0, true),
    size: view.getUint32(offset + 4, true),
    remotePort: view.getUint32(offset + 8, true),
    localPort: view.getUint32(offset + 12, true),
    voucherPort: view.getUint32(offset + 16, true),
    id: view.getInt32(offset + 20, true),
  };
}

// --- mach_msg_body_t --------------------------------------------------------

/** `sizeof(mach_msg_body_t)` */
export const MACH_MSG_BODY_SIZE = 4;

/** Writes a `mach_msg_body_t` (`msgh_descriptor_count` u32) at `offset`. */
export function encodeMachMsgBody(view: DataView, offset: number, descriptorCount: number): void {
  view.setUint32(offset, descriptorCount >>> 0, true);
}

/** Reads `msgh_descriptor_count` at `offset`. */
export function decodeMachMsgBody(view: DataView, offset: number): number {
  return view.getUint32(offset, true);
}

// --- mach_msg_port_descriptor_t ---------------------------------------------

/** `sizeof(mach_msg_port_descriptor_t)` */
export const MACH_MSG_PORT_DESCRIPTOR_SIZE = 12;
/** Size of every other descriptor kind (OOL, OOL ports, guarded port) on 64-bit. */
export const MACH_MSG_OTHER_DESCRIPTOR_SIZE = 16;

/** The fields of a `mach_msg_port_descriptor_t`. */
export interface MachMsgPortDescriptor {
  /** `name`: the port name in the sender's / receiver's space. */
  name: number;
  /** `disposition` (u8): e.g. MOVE_SEND on send, PORT_SEND on receive. */
  disposition: number;
  /** `type` (u8): `MACH_MSG_PORT_DESCRIPTOR` = 0. */
  type: number;
}

/**
 * Writes a `mach_msg_port_descriptor_t` at `offset`: name@0 u32, pad1@4 u32,
 * pad2@8 u16, disposition@10 u8, type@11 u8.
 */
export function encodeMachMsgPortDescriptor(
  view: DataView,
  offset: number,
  name: number,
  disposition: number,
): void {
  view.setUint32(offset + 0, name >>> 0, true);
  view.setUint32(offset + 4, 0, true);
  view.setUint16(offset + 8, 0, true);
  view.setUint8(offset + 10, disposition);
  view.setUint8(offset + 11, DARWIN.MACH_MSG_PORT_DESCRIPTOR);
}

/** Reads a descriptor at `offset` (its `type` byte tells whether it is a port descriptor). */
export function decodeMachMsgPortDescriptor(view: DataView, offset: number): MachMsgPortDescriptor {
  return {
    name: view.getUint32(offset + 0, true),
    disposition: view.getUint8(offset + 10),
    type: view.getUint8(offset + 11),
  };
}

// --- trailers -----------------------------------------------------------------

/** `sizeof(mach_msg_trailer_t)` */
export const MACH_MSG_TRAILER_SIZE = 8;
/** `sizeof(mach_msg_audit_trailer_t)` */
export const MACH_MSG_AUDIT_TRAILER_SIZE = 52;
/** Offset of `msgh_audit` (an `audit_token_t`, 8 x u32) inside the audit trailer. */
export const AUDIT_TRAILER_TOKEN_OFFSET = 20;
/** Index of the effective uid in `audit_token_t.val` (what `audit_token_to_euid` reads). */
export const AUDIT_TOKEN_EUID_INDEX = 1;
/** Index of the effective gid in `audit_token_t.val`. */
export const AUDIT_TOKEN_EGID_INDEX = 2;
/** Index of the pid in `audit_token_t.val`. */
export const AUDIT_TOKEN_PID_INDEX = 5;
/** Index of the pid version in `audit_token_t.val` (what `audit_token_to_pidversion` reads). */
export const AUDIT_TOKEN_PIDVERSION_INDEX = 7;

/** The fields of a `mach_msg_audit_trailer_t`. */
export interface MachMsgAuditTrailer {
  /** `msgh_trailer_type` (0 = format 0). */
  type: number;
  /** `msgh_trailer_size` (52 for the audit trailer). */
  size: number;
  /** `msgh_seqno` */
  seqno: number;
  /** `msgh_sender`: the security token, `[euid, egid]`. */
  sender: [number, number];
  /** `msgh_audit.val`: the audit token, 8 x u32. */
  audit: number[];
}

/**
 * Writes a `mach_msg_audit_trailer_t` at `offset`: type@0, size@4, seqno@8,
 * sender@12 (2 x u32), audit@20 (8 x u32). The kernel writes this; the
 * encoder exists for tests and the fake.
 */
export function encodeMachMsgAuditTrailer(
  view: DataView,
  offset: number,
  t: MachMsgAuditTrailer,
): void {
  view.setUint32(offset + 0, t.type >>> 0, true);
  view.setUint32(offset + 4, t.size >>> 0, true);
  view.setUint32(offset + 8, t.seqno >>> 0, true);
  view.setUint32(offset + 12, t.sender[0] >>> 0, true);
  view.setUint32(offset + 16, t.sender[1] >>> 0, true);
  for (let i = 0; i < 8; i++) {
    view.setUint32(offset + AUDIT_TRAILER_TOKEN_OFFSET + 4 * i, (t.audit[i] ?? 0) >>> 0, true);
  }
}

/** Reads a `mach_msg_audit_trailer_t` at `offset`. */
export function decodeMachMsgAuditTrailer(view: DataView, offset: number): MachMsgAuditTrailer {
  const audit: number[] = [];
  for (let i = 0; i < 8; i++) {
    audit.push(view.getUint32(offset + AUDIT_TRAILER_TOKEN_OFFSET + 4 * i, true));
  }
  return {
    type: view.getUint32(offset + 0, true),
    size: view.getUint32(offset + 4, true),
    seqno: view.getUint32(offset + 8, true),
    sender: [view.getUint32(offset + 12, true), view.getUint32(offset + 16, true)],
    audit,
  };
}

/** The sender's credentials as an audit token carries them. */
export function credentialsOfAuditToken(
  audit: readonly number[],
): { pid: number; uid: number; gid: number; pidVersion: number } {
  return {
    pid: audit[AUDIT_TOKEN_PID_INDEX] | 0,
    uid: audit[AUDIT_TOKEN_EUID_INDEX] >>> 0,
    gid: audit[AUDIT_TOKEN_EGID_INDEX] >>> 0,
    pidVersion: audit[AUDIT_TOKEN_PIDVERSION_INDEX] | 0,
  };
}
