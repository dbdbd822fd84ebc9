/**
 * Mach helpers over the {@link DarwinNative} calls: return-code names and
 * typed failures, the {@link MachPort} right owner, bootstrap names, the
 * no-senders notification that tells a side its peer is gone, and the two
 * message loops every channel uses (send with `MACH_SEND_TIMEOUT` 0 and
 * back-off; receive with `MACH_RCV_TIMEOUT`, first on this thread, then in
 * bounded slices on a worker thread).
 *
 * @module
 */

import { ClosedError, MachError, ProtocolError, throwIfAborted, TimeoutError } from "../errors.ts";
import type { DarwinNative } from "./native.ts";
import {
  DARWIN,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
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

/** The symbolic name of a `kern_return_t` / `mach_msg_return_t` / bootstrap / IOReturn / CVReturn value. */
export function kernReturnName(kr: number): string {
  return NAMES.get(kr) ?? `0x${(kr >>> 0).toString(16)}`;
}

const HINTS: Record<number, string> = {
  [DARWIN.BOOTSTRAP_UNKNOWN_SERVICE]:
    "nothing is listening under this name; start the listener first",
  [DARWIN.BOOTSTRAP_SERVICE_ACTIVE]:
    "another listener already uses this name; pick another or close it",
  [DARWIN.BOOTSTRAP_NAME_IN_USE]:
    "another listener already uses this name; pick another or close it",
  [DARWIN.BOOTSTRAP_NOT_PRIVILEGED]:
    "the bootstrap server refused (a sandbox, or another user's session)",
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
 * Allocates a receive right and asks for a `MACH_NOTIFY_NO_SENDERS`
 * notification on it, sent to itself, with `sync` 1: it fires once the first
 * send right made from it (the peer's) has gone — the peer closed, or died
 * and the kernel reclaimed its rights — and never before one was made.
 */
export function allocateInbox(native: DarwinNative): MachPort {
  checkKern(
    "mach_port_allocate",
    native.mach_port_allocate(native.taskSelf, DARWIN.MACH_PORT_RIGHT_RECEIVE, nameBuffer),
  );
  const port = new MachPort(native, nameView.getUint32(0, true), "receive");
  try {
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

const encoder = new TextEncoder();

/** The bootstrap prefix of a channel name. */
export const SERVICE_PREFIX = "surfaceport.";

/** The bootstrap service name of channel `name`. */
export function serviceName(name: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(`a channel name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  if (name.includes("\0")) throw new TypeError("a channel name must not contain NUL characters");
  const service = SERVICE_PREFIX + name;
  const length = encoder.encode(service).length;
  if (length >= DARWIN.BOOTSTRAP_MAX_NAME_LEN) {
    throw new RangeError(
      `the bootstrap name ${JSON.stringify(service)} is ${length} bytes; the limit is ${
        DARWIN.BOOTSTRAP_MAX_NAME_LEN - 1
      }`,
    );
  }
  return service;
}

/** A `name_t` (char[128], NUL-padded) for the bootstrap calls. */
export function encodeServiceName(service: string): Uint8Array {
  const bytes = new Uint8Array(DARWIN.BOOTSTRAP_MAX_NAME_LEN);
  const { written } = encoder.encodeInto(service, bytes.subarray(0, bytes.length - 1));
  if (written !== service.length) throw new RangeError("bootstrap name too long");
  return bytes;
}

/** `bootstrap_check_in`: the receive right of service `service`. */
export function checkIn(native: DarwinNative, service: string): MachPort {
  const out = new Uint8Array(4);
  const kr = native.bootstrap_check_in(native.bootstrapPort, encodeServiceName(service), out);
  if (kr !== 0) throw machError(`bootstrap_check_in(${JSON.stringify(service)})`, kr);
  return new MachPort(native, new DataView(out.buffer).getUint32(0, true), "receive");
}

/** `bootstrap_look_up`: a send right to service `service`. */
export function lookUp(native: DarwinNative, service: string): MachPort {
  const out = new Uint8Array(4);
  const kr = native.bootstrap_look_up(native.bootstrapPort, encodeServiceName(service), out);
  if (kr !== 0) throw machError(`bootstrap_look_up(${JSON.stringify(service)})`, kr);
  return new MachPort(native, new DataView(out.buffer).getUint32(0, true), "send");
}

// --- messages coming back -------------------------------------------------------

/**
 * After a send failed with `MACH_SEND_TIMED_OUT`, the kernel has put the
 * message back into `buffer` and its rights back into this task
 * ("pseudo-receive"): the destination as a send right with one extra user
 * reference, the reply right, and each descriptor's right, possibly under
 * new names. Releases the header's references and returns the names of the
 * returned descriptor rights, which the caller owns again.
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

/** Back-off between send attempts while the peer's queue is full (ms, doubling). */
const FIRST_SEND_RETRY_MS = 0.25;
const MAX_SEND_RETRY_MS = 8;

/** Something that can be closed under a pending wait. */
export interface WaitOwner {
  /** True once the owner was closed. */
  readonly closed: boolean;
  /** What to call the owner in a `ClosedError` ("channel", "listener"). */
  readonly what: string;
  /** Called before a worker-thread wait starts. */
  enterWait(): void;
  /** Called after it settles (the owner may now release the port it waited on). */
  leaveWait(): void;
}

/**
 * Sends the message that `encode` writes into `buffer` with
 * `MACH_SEND_TIMEOUT` 0 (never blocking a thread). While the destination's
 * queue is full the kernel hands the message back; `onReturned` gets the
 * returned descriptor names (see {@link reclaimReturnedMessage}) and the
 * send is retried with a short back-off until `deadline`, `signal` or close.
 * Returns the final `mach_msg_return_t` other than `MACH_SEND_TIMED_OUT`.
 */
export async function sendWithRetry(
  native: DarwinNative,
  buffer: Uint8Array,
  encode: () => number,
  onReturned: (names: number[]) => void,
  operation: string,
  deadline: number,
  signal: AbortSignal | undefined,
  owner: WaitOwner,
): Promise<number> {
  const start = performance.now();
  let delay = FIRST_SEND_RETRY_MS;
  for (;;) {
    const size = encode();
    const kr = native.mach_msg(
      buffer,
      DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT,
      size,
      0,
      DARWIN.MACH_PORT_NULL,
      0,
      DARWIN.MACH_PORT_NULL,
    );
    if (kr !== DARWIN.MACH_SEND_TIMED_OUT) return kr;
    onReturned(reclaimReturnedMessage(native, buffer));
    if (owner.closed) throw new ClosedError(owner.what, operation);
    throwIfAborted(signal);
    const remaining = deadline - performance.now();
    if (remaining <= 0) throw new TimeoutError(operation, Math.round(deadline - start));
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, remaining)));
    delay = Math.min(delay * 2, MAX_SEND_RETRY_MS);
    if (owner.closed) throw new ClosedError(owner.what, operation);
    throwIfAborted(signal);
  }
}

/** The longest single wait on a worker thread (ms): bounds how late a close or abort is noticed. */
export const WAIT_SLICE_MS = 50;

/**
 * Receives one message on `port` into `buffer` (audit trailer requested).
 * A waiting message is taken on this thread (`MACH_RCV_TIMEOUT`, timeout 0);
 * otherwise the wait runs on a worker thread in slices of at most
 * {@link WAIT_SLICE_MS} (after `spinMicros` of retries on this thread, in
 * low-latency mode), checking `deadline`, `signal` and the owner's
 * `closed` between slices, so that nothing keeps the process alive after a
 * close or abort. Returns the `mach_msg_return_t` of the receive (success,
 * `MACH_RCV_TOO_LARGE`, ...); a message that arrives after the owner was
 * closed is destroyed and `ClosedError` thrown.
 */
export async function receiveOnPort(
  native: DarwinNative,
  buffer: Uint8Array,
  port: number,
  operation: string,
  deadline: number,
  signal: AbortSignal | undefined,
  owner: WaitOwner,
  spinMicros = 0,
): Promise<number> {
  const start = performance.now();
  const option = RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT;
  const tryNow = () =>
    native.mach_msg(buffer, option, 0, buffer.length, port, 0, DARWIN.MACH_PORT_NULL);
  let kr = tryNow();
  if (kr === DARWIN.MACH_RCV_TIMED_OUT && spinMicros > 0) {
    // Low-latency mode: retry on this thread before paying the hop to a worker thread.
    const spinUntil = Math.min(start + spinMicros / 1000, deadline);
    while (kr === DARWIN.MACH_RCV_TIMED_OUT && performance.now() < spinUntil) kr = tryNow();
  }
  for (;;) {
    if (kr === DARWIN.KERN_SUCCESS) {
      if (owner.closed) {
        native.mach_msg_destroy(buffer);
        throw new ClosedError(owner.what, operation);
      }
      return kr;
    }
    if (kr !== DARWIN.MACH_RCV_TIMED_OUT && kr !== DARWIN.MACH_RCV_INTERRUPTED) {
      if (owner.closed) throw new ClosedError(owner.what, operation);
      return kr;
    }
    if (owner.closed) throw new ClosedError(owner.what, operation);
    throwIfAborted(signal);
    const remaining = deadline - performance.now();
    if (remaining <= 0) throw new TimeoutError(operation, Math.round(deadline - start));
    const slice = Math.max(1, Math.min(WAIT_SLICE_MS, Math.ceil(remaining)));
    owner.enterWait();
    try {
      kr = await native.mach_msg_wait(
        buffer,
        option,
        0,
        buffer.length,
        port,
        slice,
        DARWIN.MACH_PORT_NULL,
      );
    } finally {
      owner.leaveWait();
    }
  }
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
    native.mach_msg_destroy(buffer);
    return new ProtocolError(
      "CONTROL_TRUNCATED",
      `${call}: the kernel could not copy the message's descriptors out (${
        kernReturnName(kr & ~DARWIN.MACH_MSG_MASK)
      } | 0x${(kr & DARWIN.MACH_MSG_MASK).toString(16)}); it was destroyed`,
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
