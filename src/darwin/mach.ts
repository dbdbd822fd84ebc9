/**
 * Mach helpers over the {@link DarwinNative} calls: return-code names and
 * typed failures, the {@link MachPort} right owner, the no-senders
 * notification that tells a side its peer is gone, one send that never
 * waits and the reclaiming of a message the kernel hands back (the send
 * loop that waits for room is in `send.ts`), and {@link destroyReceived}, which frees everything a received
 * message brought. The receive loop and the shared wait are in `poller.ts`,
 * the bootstrap names in `bootstrap.ts`.
 *
 * @module
 */

import { MachError, ProtocolError } from "../core/errors.ts";
import type { DarwinNative } from "./native.ts";
import {
  DARWIN,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  msghBitsLocal,
  msghBitsRemote,
  msghIsComplex,
  RECEIVE_OPTIONS,
} from "./structs.ts";

export type { DarwinNative };

const CV_RETURN_NAMES: Record<number, string> = {
  [-6660]: "kCVReturnError",
  [-6661]: "kCVReturnInvalidArgument",
  [-6662]: "kCVReturnAllocationFailed",
  [-6663]: "kCVReturnUnsupported",
  [-6680]: "kCVReturnInvalidPixelFormat",
  [-6681]: "kCVReturnInvalidSize",
  [-6682]: "kCVReturnInvalidPixelBufferAttributes",
  [-6689]: "kCVReturnWouldExceedAllocationThreshold",
  [-6690]: "kCVReturnPoolAllocationFailed",
  [-6691]: "kCVReturnInvalidPoolAttributes",
  [-6692]: "kCVReturnRetry",
};

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(DARWIN)) {
  if (
    /^(KERN_|MACH_SEND_[A-Z_]+$|MACH_RCV_[A-Z_]+$|BOOTSTRAP_|kIOReturn)/.test(name) &&
    !NAMES.has(value) &&
    !/MACH_(SEND|RCV)_(MSG|LARGE|LARGE_IDENTITY|TIMEOUT|INTERRUPT)$/.test(name) &&
    name !== "BOOTSTRAP_MAX_NAME_LEN" && name !== "BOOTSTRAP_SUCCESS" &&
    name !== "kIOReturnSuccess"
  ) {
    NAMES.set(value, name);
  }
}
for (const [value, name] of Object.entries(CV_RETURN_NAMES)) NAMES.set(Number(value), name);

/** The special bits a `mach_msg_return_t` may carry, by name (`mach/message.h`). */
const SPECIAL_BITS: readonly [number, string][] = [
  [DARWIN.MACH_MSG_IPC_SPACE, "MACH_MSG_IPC_SPACE"],
  [DARWIN.MACH_MSG_VM_SPACE, "MACH_MSG_VM_SPACE"],
  [DARWIN.MACH_MSG_IPC_KERNEL, "MACH_MSG_IPC_KERNEL"],
  [DARWIN.MACH_MSG_VM_KERNEL, "MACH_MSG_VM_KERNEL"],
];

/**
 * The symbolic name of a `kern_return_t` / `mach_msg_return_t` / bootstrap /
 * IOReturn / CVReturn value. A `mach_msg_return_t` with special bits ORed in
 * (`MACH_SEND_NO_BUFFER | MACH_MSG_IPC_SPACE`) is named part by part; only
 * a value with no known name is printed as hex.
 */
export function kernReturnName(kr: number): string {
  const known = NAMES.get(kr);
  if (known) return known;
  const special = kr & DARWIN.MACH_MSG_MASK;
  const base = NAMES.get(baseReturn(kr));
  if (special === 0 || !base || !/^MACH_(SEND|RCV)_/.test(base)) {
    return `0x${(kr >>> 0).toString(16)}`;
  }
  const parts = [base];
  let rest = special;
  for (const [bit, name] of SPECIAL_BITS) {
    if (rest & bit) {
      parts.push(name);
      rest &= ~bit;
    }
  }
  if (rest) parts.push(`0x${rest.toString(16)}`);
  return parts.join(" | ");
}

const HINTS: Record<number, string> = {
  [DARWIN.BOOTSTRAP_UNKNOWN_SERVICE]:
    "nothing is listening under this name; start the listener first",
  [DARWIN.BOOTSTRAP_SERVICE_ACTIVE]:
    "a listener of this process uses this name, or closed it so recently that launchd has not " +
    "removed it yet; pick another name or close that listener",
  [DARWIN.BOOTSTRAP_NAME_IN_USE]:
    "another listener already uses this name; pick another or close it",
  [DARWIN.BOOTSTRAP_NOT_PRIVILEGED]:
    "another process registered this name (a live listener, or one that exited so recently that " +
    "launchd has not removed it yet), or the bootstrap server refused this process " +
    "(a sandbox, another user's session)",
  [DARWIN.KERN_RESOURCE_SHORTAGE]: "the kernel is out of port names or memory",
  [DARWIN.KERN_NO_SPACE]: "this task's port name space is full; close surfaces and frames",
  [DARWIN.MACH_SEND_INVALID_DEST]: "the peer is gone",
};

/** Builds a {@link MachError} for `call`. */
export function machError(call: string, kr: number, hint?: string): MachError {
  return new MachError(call, kr, kernReturnName(kr), hint ?? HINTS[kr]);
}

/** Throws a {@link MachError} unless `kr` is 0. */
export function checkKern(call: string, kr: number): void {
  if (kr !== 0) throw machError(call, kr);
}

// --- right ownership -------------------------------------------------------------

/** Which right a {@link MachPort} owns. */
export type PortRight = "send" | "receive";

interface HeldRight {
  native: DarwinNative;
  name: number;
  right: PortRight;
}

function releaseRight(held: HeldRight): void {
  const { native, name, right } = held;
  if (right === "send") native.mach_port_deallocate(native.taskSelf, name);
  else native.mach_port_mod_refs(native.taskSelf, name, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
}

const portFinalizer = new FinalizationRegistry<HeldRight>(releaseRight);

/**
 * Owns one user reference of a send right (released with
 * `mach_port_deallocate`) or a receive right (destroyed with
 * `mach_port_mod_refs(..., MACH_PORT_RIGHT_RECEIVE, -1)`). `close()` is
 * idempotent; a finaliser releases a forgotten one. {@link take} hands the
 * right over (to a message that moves it) without releasing it.
 */
export class MachPort {
  readonly right: PortRight;
  #held: HeldRight | undefined;

  constructor(native: DarwinNative, name: number, right: PortRight) {
    this.right = right;
    this.#held = { native, name, right };
    portFinalizer.register(this, this.#held, this);
  }

  /** The port name in this task (0 once closed or taken). */
  get name(): number {
    return this.#held?.name ?? DARWIN.MACH_PORT_NULL;
  }

  /** True once closed or taken. */
  get closed(): boolean {
    return this.#held === undefined;
  }

  /** Gives the right up without releasing it (it was moved into a message); returns its name. */
  take(): number {
    const held = this.#held;
    if (!held) throw new Error("internal: MachPort taken after close");
    this.#held = undefined;
    portFinalizer.unregister(this);
    return held.name;
  }

  /** Releases the right. Idempotent. */
  close(): void {
    const held = this.#held;
    if (!held) return;
    this.#held = undefined;
    portFinalizer.unregister(this);
    releaseRight(held);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

const nameBuffer = new Uint8Array(4);
const nameView = new DataView(nameBuffer.buffer);

/**
 * The queue limit of every inbox: a subscriber's `depth` (up to 64 frames in
 * flight) plus room for its control messages and the kernel's notification.
 * A new port's limit is `MACH_PORT_QLIMIT_DEFAULT` (5): past it every send is
 * a full copy-in that the kernel hands back.
 */
export const INBOX_QUEUE_LIMIT = 80;

/** `mach_port_set_attributes(MACH_PORT_LIMITS_INFO)`: the queue limit of a receive right. */
export function setQueueLimit(native: DarwinNative, name: number, limit: number): void {
  const limits = new Uint8Array(4 * DARWIN.MACH_PORT_LIMITS_INFO_COUNT);
  new DataView(limits.buffer).setInt32(0, limit, true); // mach_port_limits_t.mpl_qlimit
  checkKern(
    "mach_port_set_attributes(MACH_PORT_LIMITS_INFO)",
    native.mach_port_set_attributes(
      native.taskSelf,
      name,
      DARWIN.MACH_PORT_LIMITS_INFO,
      limits,
      DARWIN.MACH_PORT_LIMITS_INFO_COUNT,
    ),
  );
}

/** Allocates a plain receive right (no notification requested). */
export function allocateReceiveRight(native: DarwinNative): MachPort {
  checkKern(
    "mach_port_allocate",
    native.mach_port_allocate(native.taskSelf, DARWIN.MACH_PORT_RIGHT_RECEIVE, nameBuffer),
  );
  return new MachPort(native, nameView.getUint32(0, true), "receive");
}

/**
 * Allocates a receive right with a queue limit of {@link INBOX_QUEUE_LIMIT}
 * and asks for a `MACH_NOTIFY_NO_SENDERS`
 * notification on it, sent to itself, with `sync` 1: it fires once the first
 * send right made from it (the peer's) has gone — the peer closed, or died
 * and the kernel reclaimed its rights — and never before one was made.
 */
export function allocateInbox(native: DarwinNative): MachPort {
  const port = allocateReceiveRight(native);
  try {
    setQueueLimit(native, port.name, INBOX_QUEUE_LIMIT);
    const previous = new Uint8Array(4);
    checkKern(
      "mach_port_request_notification(MACH_NOTIFY_NO_SENDERS)",
      native.mach_port_request_notification(
        native.taskSelf,
        port.name,
        DARWIN.MACH_NOTIFY_NO_SENDERS,
        1,
        port.name,
        DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
        previous,
      ),
    );
    const old = new DataView(previous.buffer).getUint32(0, true);
    if (old !== DARWIN.MACH_PORT_NULL) native.mach_port_deallocate(native.taskSelf, old);
  } catch (error) {
    port.close();
    throw error;
  }
  return port;
}

// --- messages coming back -------------------------------------------------------

/**
 * True if a failed send's message was handed back into `buffer`
 * ("pseudo-receive"). XNU does that for every failure after the message was
 * copied in — `MACH_SEND_TIMED_OUT`, `MACH_SEND_INTERRUPTED`,
 * `MACH_SEND_NO_BUFFER`, `MACH_SEND_INVALID_OPTIONS`..., with special bits
 * (`MACH_MSG_IPC_SPACE`...) ORed in, hence `kr & ~MACH_MSG_MASK` — and
 * rewrites the header as a received one: the destination's disposition
 * becomes `MACH_MSG_TYPE_PORT_SEND` / `PORT_SEND_ONCE`. A failure before
 * copy-in leaves the buffer as written, and surfaceport never sends with
 * those two as the destination's disposition (it uses COPY_SEND or
 * MAKE_SEND), so the header tells the two cases apart for any code.
 */
export function messageReturned(kr: number, buffer: Uint8Array): boolean {
  const base = baseReturn(kr);
  if (base <= DARWIN.MACH_SEND_IN_PROGRESS || base >= DARWIN.MACH_RCV_IN_PROGRESS) return false;
  const remote = buffer[0] & DARWIN.MACH_MSGH_BITS_REMOTE_MASK;
  return remote === DARWIN.MACH_MSG_TYPE_PORT_SEND ||
    remote === DARWIN.MACH_MSG_TYPE_PORT_SEND_ONCE;
}

/** `kr` without the special bits (`MACH_MSG_IPC_SPACE`...). */
export function baseReturn(kr: number): number {
  return (kr & ~DARWIN.MACH_MSG_MASK) >>> 0;
}

/**
 * After a send failed and {@link messageReturned}, the kernel has put the
 * message back into `buffer` and its rights back into this task
 * ("pseudo-receive"): the destination as a send right with one extra user
 * reference, the reply right, and each descriptor's right, possibly under
 * new names. Releases the header's references (the destination's extra
 * one would otherwise keep the peer from ever seeing this side close) and
 * returns the names of the returned descriptor rights, which the caller
 * owns again.
 */
export function reclaimReturnedMessage(native: DarwinNative, buffer: Uint8Array): number[] {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const header = decodeMachMsgHeader(view, 0);
  const dropHeaderRight = (type: number, name: number) => {
    if (type !== 0 && name !== DARWIN.MACH_PORT_NULL && name !== DARWIN.MACH_PORT_DEAD) {
      native.mach_port_deallocate(native.taskSelf, name);
    }
  };
  dropHeaderRight(msghBitsRemote(header.bits), header.remotePort);
  dropHeaderRight(msghBitsLocal(header.bits), header.localPort);
  const names: number[] = [];
  if (msghIsComplex(header.bits)) {
    const count = view.getUint32(MACH_MSG_HEADER_SIZE, true);
    let offset = MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE;
    for (let i = 0; i < count && offset + 12 <= header.size; i++, offset += 12) {
      const descriptor = decodeMachMsgPortDescriptor(view, offset);
      if (descriptor.type !== DARWIN.MACH_MSG_PORT_DESCRIPTOR) break;
      names.push(descriptor.name);
    }
  }
  return names;
}

/** Something that can be closed under a pending wait. */
export interface WaitOwner {
  /** True once the owner was closed. */
  readonly closed: boolean;
  /** What to call the owner in a `ClosedError` ("channel", "listener"). */
  readonly what: string;
  /**
   * Set when the port waited on is not this library's (`receivePortRight`):
   * its owner may destroy it under a parked wait, which no port set
   * reports, so the wait re-checks the port this often (ms).
   */
  readonly recheckMs?: number;
  /** Called before a wait parks. */
  enterWait(): void;
  /** Called after it settles (the owner may now release the port it waited on). */
  leaveWait(): void;
}

/**
 * One `mach_msg` send of the first `size` bytes of `buffer` that never waits
 * (`MACH_SEND_TIMEOUT`, timeout 0): the `mach_msg_return_t`. A message the
 * kernel hands back is the caller's to reclaim (see {@link messageReturned}).
 */
export function sendWithoutWaiting(
  native: DarwinNative,
  buffer: Uint8Array,
  size: number,
  extraOptions = 0,
): number {
  return native.mach_msg(
    buffer,
    DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT | extraOptions,
    size,
    0,
    DARWIN.MACH_PORT_NULL,
    0,
    DARWIN.MACH_PORT_NULL,
  );
}

/**
 * True if a receive's `mach_msg_return_t` left a message in the buffer that
 * still holds rights or memory: `MACH_RCV_BODY_ERROR` (with any special
 * bits) means the kernel copied out the header and what it could of the
 * body — every right and region it did copy out is ours — and nulled the
 * rest. Such a message must go through `mach_msg_destroy`.
 */
export function isBodyError(kr: number): boolean {
  return ((kr & ~DARWIN.MACH_MSG_MASK) >>> 0) === DARWIN.MACH_RCV_BODY_ERROR;
}

/**
 * The typed failure of a receive whose `mach_msg_return_t` is not success:
 * a message too large for the buffer (the kernel destroyed it) is
 * `ProtocolError` `MESSAGE_TRUNCATED`; a body the kernel could not copy out
 * whole (a hostile descriptor, e.g. out-of-line memory this task cannot
 * map) is destroyed here and reported as `ProtocolError`
 * `CONTROL_TRUNCATED`; anything else is a {@link MachError}.
 */
export function receiveFailure(
  native: DarwinNative,
  buffer: Uint8Array,
  kr: number,
  call: string,
): ProtocolError | MachError {
  if (kr === DARWIN.MACH_RCV_TOO_LARGE) return tooLarge(buffer.length);
  if (isBodyError(kr)) {
    destroyReceived(native, buffer);
    return new ProtocolError(
      "CONTROL_TRUNCATED",
      `${call}: the kernel could not copy the message's descriptors out (${
        kernReturnName(kr)
      }); it was destroyed`,
    );
  }
  return machError(call, kr);
}

/** Throws the protocol error for a receive that the kernel refused as too large (it destroyed the message). */
export function tooLarge(bufferSize: number): ProtocolError {
  return new ProtocolError(
    "MESSAGE_TRUNCATED",
    `message and trailer exceed the ${bufferSize}-byte receive buffer (the kernel destroyed it)`,
  );
}

/**
 * Destroys a received message (or one whose body the kernel copied out in
 * part): every right it carried, and every out-of-line region it mapped
 * into this task. `mach_msg_destroy` alone is not enough against a hostile
 * sender: XNU copies an out-of-line region out with `deallocate` set only
 * when the sender asked for `MACH_MSG_VIRTUAL_COPY`, and copies
 * `MACH_MSG_OOL_VOLATILE_DESCRIPTOR` memory out as a new region too, while
 * libsyscall's `mach_msg_destroy` frees a region only when `deallocate` is
 * set and never a volatile one. So this clears `deallocate` on every region
 * (and nulls OOL and volatile descriptors), lets `mach_msg_destroy` release
 * the rights (including those in out-of-line port arrays, which it reads),
 * and then frees each region itself with `mach_vm_deallocate`, exactly once.
 * A port array XNU could not map arrives with address 0 and its count kept;
 * its count is zeroed, or `mach_msg_destroy` would read names at address 0.
 */
export function destroyReceived(native: DarwinNative, buffer: Uint8Array): void {
  const regions: [bigint, bigint][] = [];
  if (buffer.length >= MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE) {
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const header = decodeMachMsgHeader(view, 0);
    const end = Math.min(header.size, buffer.length);
    if (msghIsComplex(header.bits)) {
      const count = view.getUint32(MACH_MSG_HEADER_SIZE, true);
      let at = MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE;
      for (let i = 0; i < count && at + MACH_MSG_PORT_DESCRIPTOR_SIZE <= end; i++) {
        const type = view.getUint8(at + 11);
        if (type === DARWIN.MACH_MSG_PORT_DESCRIPTOR) {
          at += MACH_MSG_PORT_DESCRIPTOR_SIZE;
          continue;
        }
        if (at + MACH_MSG_OTHER_DESCRIPTOR_SIZE > end) break;
        // 64-bit out-of-line descriptors: address u64 @0, deallocate u8 @8, type u8 @11, size/count u32 @12.
        const ports = type === DARWIN.MACH_MSG_OOL_PORTS_DESCRIPTOR;
        if (
          ports || type === DARWIN.MACH_MSG_OOL_DESCRIPTOR ||
          type === DARWIN.MACH_MSG_OOL_VOLATILE_DESCRIPTOR
        ) {
          const address = view.getBigUint64(at, true);
          const bytes = BigInt(view.getUint32(at + 12, true)) * (ports ? 4n : 1n);
          if (address !== 0n && bytes > 0n) regions.push([address, bytes]);
          view.setUint8(at + 8, 0);
          // A port array XNU could not map (ipc_kmsg_copyout_ool_ports_descriptor: its rights
          // already destroyed, address 0) keeps its count, and libsyscall's mach_msg_destroy
          // would walk that many names from address 0: zero the count.
          if (!ports || address === 0n) {
            view.setBigUint64(at, 0n, true);
            view.setUint32(at + 12, 0, true);
          }
        }
        at += MACH_MSG_OTHER_DESCRIPTOR_SIZE;
      }
    }
  }
  native.mach_msg_destroy(buffer);
  for (const [address, bytes] of regions) {
    native.mach_vm_deallocate(native.taskSelf, address, bytes);
  }
}

/** The most messages {@link drainAndDestroy} receives before destroying the port anyway. */
export const MAX_DRAINED_MESSAGES = 64;

/**
 * Receives (timeout 0) and destroys every message queued on `port`, whose
 * receive right this task holds, then destroys the right. Destroying a
 * port with messages queued leaves their destruction to the kernel, which
 * may defer it; draining first releases every right and region they carry
 * (a client's reply right, a sender's surface use) before this returns.
 */
export function drainAndDestroy(native: DarwinNative, port: MachPort, buffer: Uint8Array): void {
  const name = port.name;
  if (name !== DARWIN.MACH_PORT_NULL) {
    // Bounded: a peer that still holds a send right could refill the queue as fast as we drain
    // it; whatever is left dies with the port.
    for (let i = 0; i < MAX_DRAINED_MESSAGES; i++) {
      const kr = native.mach_msg(
        buffer,
        RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
        0,
        buffer.length,
        name,
        0,
        DARWIN.MACH_PORT_NULL,
      );
      if (kr === DARWIN.KERN_SUCCESS || isBodyError(kr)) destroyReceived(native, buffer);
      else if (kr !== DARWIN.MACH_RCV_TOO_LARGE) break; // a too-large one was destroyed by the kernel
    }
  }
  port.close();
}
