/**
 * Mach helpers over the {@link DarwinNative} calls: return-code names and
 * typed failures, the {@link MachPort} right owner, bootstrap names, the
 * no-senders notification that tells a side its peer is gone, and the two
 * message loops every channel uses (send with `MACH_SEND_TIMEOUT` 0 and
 * back-off; receive with `MACH_RCV_TIMEOUT` 0 on this thread, then parked in
 * the process's one shared port-set wait, {@link PortWaitSet}).
 *
 * @module
 */

import { ClosedError, MachError, ProtocolError, throwIfAborted, TimeoutError } from "../errors.ts";
import type { DarwinNative } from "./native.ts";
import {
  DARWIN,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgHeader,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  machMsghBits,
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

/** How often a wait on a port this library does not own re-checks it (ms). */
export const WAIT_SLICE_MS = 50;

/**
 * The longest single shared wait (ms). Only a safety net: every change that
 * matters (a message on a member port, a nearer deadline, the last waiter
 * leaving) ends the wait at once.
 */
export const MAX_PARK_MS = 1000;

/**
 * The shared wait's `mach_msg` options: receive on the port set with
 * `MACH_RCV_LARGE | MACH_RCV_LARGE_IDENTITY` into a bare header. Every
 * message plus its trailer is larger than that, so none is ever dequeued:
 * the kernel leaves it queued and writes its size into `msgh_size` and the
 * member port it waits on into `msgh_local_port` (XNU copies both out when
 * `rcv_size` ≥ 16). The wait owns no right, ever.
 */
export const PEEK_OPTIONS = (DARWIN.MACH_RCV_MSG | DARWIN.MACH_RCV_LARGE |
  DARWIN.MACH_RCV_LARGE_IDENTITY | DARWIN.MACH_RCV_TIMEOUT) >>> 0;
/** The peek buffer: one `mach_msg_header_t`. */
const PEEK_SIZE = MACH_MSG_HEADER_SIZE;
/** `msgh_id` of the empty message that interrupts the shared wait. */
const INTERRUPT_ID = 0x53505249;

/** One parked receive: woken when `port` has a message, closes, or `deadline` / `recheckAt` passes. */
interface PortWaiter {
  port: number;
  deadline: number;
  /** Settled `false` (look again) at this time, if it comes before the deadline. */
  recheckAt: number;
  /** Settles the wait: true (a message is waiting), false (look again), or an error. */
  settle: (result: boolean | Error) => void;
  timeoutError: () => TimeoutError;
}

/** One life of the shared wait: its port set, control port and peek buffer. */
interface WaitRound {
  set: number;
  control: number;
  /** A stale `mach_msg` of an earlier round may still write into its own buffer, never into this one. */
  peek: Uint8Array;
  waiting: boolean;
  waitEnd: number;
  interruptPending: boolean;
}

/**
 * Every parked receive of one task, waited for by one `mach_msg` on one
 * worker thread: the Mach form of the Linux channel's `Poller`.
 *
 * Deno runs nonblocking FFI calls on its blocking-thread pool, capped at 32
 * threads. A `mach_msg` per parked channel — even in 50 ms slices — let 32
 * idle channels occupy every thread: the channel that did have a frame,
 * `accept`, and Deno's own async file I/O queued behind slices of idle ones
 * (and each idle channel woke a thread 20 times a second). Now a parked
 * receive adds its inbox to a port set (`mach_port_insert_member`), and one
 * `mach_msg` peeks the whole set ({@link PEEK_OPTIONS}): when some member
 * has a message, the kernel names it and leaves the message queued; that
 * member is taken out of the set and its waiter settled; the owner then
 * receives it on the JS thread with timeout 0, with its own buffer, its own
 * size limit and its own right bookkeeping, exactly as on the fast path.
 *
 * The set wakes by itself for messages on members, including members added
 * while it waits. A nearer deadline interrupts it through a control port in
 * the set (an empty message sent with `MAKE_SEND`, so no send right is ever
 * held). The set and the control port exist only while some receive is
 * parked: when the last one leaves they are destroyed at once, which also
 * ends a pending wait (`MACH_RCV_PORT_DIED`), so a process whose channels
 * are all closed or idle-aborted can exit. A round's stale result is
 * ignored; its peek could at worst look at a reused name, and a peek
 * dequeues nothing.
 */
export class PortWaitSet {
  readonly #native: DarwinNative;
  readonly #waiters = new Map<number, Set<PortWaiter>>();
  readonly #interrupt = new Uint8Array(MACH_MSG_HEADER_SIZE);
  readonly #drain = new Uint8Array(MACH_MSG_HEADER_SIZE + DARWIN.MAX_TRAILER_SIZE);
  readonly #out = new Uint8Array(4);
  #round: WaitRound | undefined;

  constructor(native: DarwinNative) {
    this.#native = native;
  }

  /** The live port set's name, or 0 when nothing is parked (for tests). */
  get setName(): number {
    return this.#round?.set ?? DARWIN.MACH_PORT_NULL;
  }

  /** Number of parked waits. */
  get size(): number {
    let n = 0;
    for (const group of this.#waiters.values()) n += group.size;
    return n;
  }

  /** Parks `waiter`; throws `MachError` if its port cannot join the set (not a receive right). */
  add(waiter: PortWaiter): void {
    const native = this.#native;
    const round = this.#round ?? this.#start();
    let group = this.#waiters.get(waiter.port);
    if (!group) {
      const kr = native.mach_port_insert_member(native.taskSelf, waiter.port, round.set);
      if (kr !== DARWIN.KERN_SUCCESS && kr !== DARWIN.KERN_ALREADY_IN_SET) {
        if (this.#waiters.size === 0) this.#stop();
        throw machError("mach_port_insert_member", kr);
      }
      this.#waiters.set(waiter.port, group = new Set());
    }
    group.add(waiter);
    if (round.waiting && Math.min(waiter.deadline, waiter.recheckAt) < round.waitEnd) {
      this.#interruptWait(round);
    }
  }

  /** Unparks `waiter` without settling it; true if it was parked. */
  remove(waiter: PortWaiter): boolean {
    const group = this.#waiters.get(waiter.port);
    if (!group?.delete(waiter)) return false;
    if (group.size === 0) {
      this.#waiters.delete(waiter.port);
      const round = this.#round;
      if (round && this.#waiters.size > 0) {
        // Out of the set, or the next peek would name it again for a message nobody waits for.
        this.#native.mach_port_extract_member(this.#native.taskSelf, waiter.port, round.set);
      }
    }
    if (this.#waiters.size === 0) this.#stop(); // destroying the set removes every member
    return true;
  }

  /** Settles every wait parked on `port` with `result` (true: a message is waiting; false: look again). */
  settlePort(port: number, result: boolean): void {
    const group = this.#waiters.get(port);
    if (!group) return;
    for (const waiter of [...group]) {
      this.remove(waiter);
      waiter.settle(result);
    }
  }

  #start(): WaitRound {
    const native = this.#native;
    const view = new DataView(this.#out.buffer);
    checkKern(
      "mach_port_allocate(MACH_PORT_RIGHT_PORT_SET)",
      native.mach_port_allocate(native.taskSelf, DARWIN.MACH_PORT_RIGHT_PORT_SET, this.#out),
    );
    const set = view.getUint32(0, true);
    let kr = native.mach_port_allocate(native.taskSelf, DARWIN.MACH_PORT_RIGHT_RECEIVE, this.#out);
    const control = kr === DARWIN.KERN_SUCCESS ? view.getUint32(0, true) : DARWIN.MACH_PORT_NULL;
    if (kr === DARWIN.KERN_SUCCESS) {
      kr = native.mach_port_insert_member(native.taskSelf, control, set);
    }
    if (kr !== DARWIN.KERN_SUCCESS) {
      if (control !== DARWIN.MACH_PORT_NULL) {
        native.mach_port_mod_refs(native.taskSelf, control, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
      }
      native.mach_port_mod_refs(native.taskSelf, set, DARWIN.MACH_PORT_RIGHT_PORT_SET, -1);
      throw machError("mach_port_allocate / mach_port_insert_member (control port)", kr);
    }
    const round: WaitRound = {
      set,
      control,
      peek: new Uint8Array(PEEK_SIZE),
      waiting: false,
      waitEnd: Infinity,
      interruptPending: false,
    };
    this.#round = round;
    void this.#run(round);
    return round;
  }

  /** Destroys the round's ports (ending a pending wait on the set) once no receive is parked. */
  #stop(): void {
    const round = this.#round;
    if (!round) return;
    this.#round = undefined;
    const native = this.#native;
    // The control port's queued interrupts die with it; they carry no right.
    native.mach_port_mod_refs(native.taskSelf, round.control, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
    native.mach_port_mod_refs(native.taskSelf, round.set, DARWIN.MACH_PORT_RIGHT_PORT_SET, -1);
  }

  async #run(round: WaitRound): Promise<void> {
    const native = this.#native;
    try {
      for (;;) {
        // Waits parked in this same turn of the event loop join this round without an interrupt.
        await Promise.resolve();
        if (this.#round !== round) return;
        let until = Infinity;
        for (const group of this.#waiters.values()) {
          for (const w of group) until = Math.min(until, w.deadline, w.recheckAt);
        }
        const now = performance.now();
        const timeout = Math.max(0, Math.min(MAX_PARK_MS, Math.ceil(until - now)));
        let kr: number = DARWIN.MACH_RCV_TIMED_OUT;
        if (timeout > 0) {
          round.waiting = true;
          round.waitEnd = now + timeout;
          kr = await native.mach_msg_wait(
            round.peek,
            PEEK_OPTIONS,
            0,
            PEEK_SIZE,
            round.set,
            timeout,
            DARWIN.MACH_PORT_NULL,
          );
          round.waiting = false;
          round.waitEnd = Infinity;
          if (this.#round !== round) return; // stopped meanwhile: this result means nothing
        }
        if (kr === DARWIN.MACH_RCV_TOO_LARGE || kr === DARWIN.KERN_SUCCESS) {
          // KERN_SUCCESS cannot happen (no message fits a bare header); treat it as a wake-up.
          const name = new DataView(round.peek.buffer).getUint32(12, true);
          if (name === round.control) this.#drainControl(round);
          else this.settlePort(name, true);
        } else if (kr !== DARWIN.MACH_RCV_TIMED_OUT && kr !== DARWIN.MACH_RCV_INTERRUPTED) {
          throw machError("mach_msg(port set)", kr);
        }
        this.#expire(performance.now());
      }
    } catch (error) {
      if (this.#round !== round) return;
      const waiters = [...this.#waiters.values()].flatMap((group) => [...group]);
      this.#waiters.clear();
      this.#stop();
      for (const waiter of waiters) waiter.settle(error as Error);
    }
  }

  /** Settles every wait whose deadline (TimeoutError) or re-check time (false) has come. */
  #expire(now: number): void {
    for (const group of [...this.#waiters.values()]) {
      for (const waiter of [...group]) {
        if (waiter.deadline <= now) {
          this.remove(waiter);
          waiter.settle(waiter.timeoutError());
        } else if (waiter.recheckAt <= now) {
          this.remove(waiter);
          waiter.settle(false);
        }
      }
    }
  }

  /** Ends the pending wait early (a nearer deadline): an empty message to the control port. */
  #interruptWait(round: WaitRound): void {
    if (round.interruptPending) return;
    const native = this.#native;
    encodeMachMsgHeader(new DataView(this.#interrupt.buffer), 0, {
      bits: machMsghBits(DARWIN.MACH_MSG_TYPE_MAKE_SEND, 0),
      size: MACH_MSG_HEADER_SIZE,
      remotePort: round.control,
      localPort: DARWIN.MACH_PORT_NULL,
      voucherPort: DARWIN.MACH_PORT_NULL,
      id: INTERRUPT_ID,
    });
    const kr = native.mach_msg(
      this.#interrupt,
      DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT,
      MACH_MSG_HEADER_SIZE,
      0,
      DARWIN.MACH_PORT_NULL,
      0,
      DARWIN.MACH_PORT_NULL,
    );
    if (kr === DARWIN.MACH_SEND_TIMED_OUT) {
      // Queue full of interrupts already; the message came back with the send right we made.
      reclaimReturnedMessage(native, this.#interrupt);
    }
    // On any other failure the wait still ends by MAX_PARK_MS.
    round.interruptPending = kr === DARWIN.KERN_SUCCESS || kr === DARWIN.MACH_SEND_TIMED_OUT;
  }

  /** Receives (on this thread, timeout 0) every interrupt queued on the control port. */
  #drainControl(round: WaitRound): void {
    const native = this.#native;
    const buffer = this.#drain;
    for (;;) {
      const kr = native.mach_msg(
        buffer,
        RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
        0,
        buffer.length,
        round.control,
        0,
        DARWIN.MACH_PORT_NULL,
      );
      if (kr === DARWIN.KERN_SUCCESS || isBodyError(kr)) native.mach_msg_destroy(buffer);
      else if (kr !== DARWIN.MACH_RCV_TOO_LARGE) break;
    }
    round.interruptPending = false;
  }
}

const waitSets = new WeakMap<DarwinNative, PortWaitSet>();

/** The shared wait of `native`'s task (one per process on macOS; one per fake task in tests). */
export function portWaitSet(native: DarwinNative): PortWaitSet {
  let set = waitSets.get(native);
  if (!set) waitSets.set(native, set = new PortWaitSet(native));
  return set;
}

/** Settles every receive parked on `port` (its owner is closing): they look again and see it. */
export function wakeParked(native: DarwinNative, port: number): void {
  waitSets.get(native)?.settlePort(port, false);
}

/**
 * Parks a receive on `port` in the task's {@link PortWaitSet} until a
 * message is waiting (true), it is woken or its re-check time comes
 * (false), the deadline passes (TimeoutError) or the signal aborts (its
 * reason). After joining the set it looks at the port once more (a peek
 * with `MACH_RCV_LARGE`, timeout 0, which dequeues nothing), so a message
 * that arrived between the caller's last receive and the join is never
 * missed, whatever the kernel does for members added under a pending wait.
 */
function park(
  native: DarwinNative,
  port: number,
  deadline: number,
  recheckAt: number,
  signal: AbortSignal | undefined,
  timeoutError: () => TimeoutError,
): Promise<boolean> {
  const set = portWaitSet(native);
  return new Promise<boolean>((resolve, reject) => {
    const onAbort = () => {
      set.remove(waiter);
      reject(signal!.reason);
    };
    const waiter: PortWaiter = {
      port,
      deadline,
      recheckAt,
      settle: (result) => {
        signal?.removeEventListener("abort", onAbort);
        if (result instanceof Error) reject(result);
        else resolve(result);
      },
      timeoutError,
    };
    try {
      set.add(waiter);
    } catch (error) {
      reject(error);
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    const peek = new Uint8Array(PEEK_SIZE);
    const kr = native.mach_msg(
      peek,
      DARWIN.MACH_RCV_MSG | DARWIN.MACH_RCV_LARGE | DARWIN.MACH_RCV_TIMEOUT,
      0,
      PEEK_SIZE,
      port,
      0,
      DARWIN.MACH_PORT_NULL,
    );
    if (kr !== DARWIN.MACH_RCV_TIMED_OUT) set.settlePort(port, true); // waiting, or an error to see
  });
}

/**
 * Receives one message on `port` into `buffer` (audit trailer requested).
 * A waiting message is taken on this thread (`MACH_RCV_TIMEOUT`, timeout 0,
 * after `spinMicros` of retries in low-latency mode): no thread hop.
 * Otherwise the receive parks in the task's shared port-set wait
 * ({@link PortWaitSet}: one worker thread for every parked receive) and
 * takes the message on this thread once the set names its port. The
 * deadline, the signal and the owner's close end a parked receive at once.
 * Returns the `mach_msg_return_t` of the receive (success,
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
  const timeoutError = () => new TimeoutError(operation, Math.round(deadline - start));
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
    const now = performance.now();
    if (deadline - now <= 0) throw timeoutError();
    const recheckAt = owner.recheckMs === undefined ? Infinity : now + owner.recheckMs;
    owner.enterWait();
    try {
      await park(native, port, deadline, recheckAt, signal, timeoutError);
    } finally {
      owner.leaveWait();
    }
    if (owner.closed) throw new ClosedError(owner.what, operation);
    kr = tryNow();
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
