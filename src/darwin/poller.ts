/**
 * The process's one shared wait for parked receives ({@link PortWaitSet}, the
 * Mach form of `src/linux/poller.ts`) and the receive loop every channel uses
 * ({@link receiveOnPort}: `MACH_RCV_TIMEOUT` 0 on this thread, then parked in
 * the shared port-set wait).
 *
 * @module
 */

import { ClosedError, throwIfAborted, TimeoutError } from "../core/errors.ts";
import type { DarwinNative } from "./native.ts";
import {
  checkKern,
  destroyReceived,
  isBodyError,
  machError,
  messageReturned,
  reclaimReturnedMessage,
  sendWithoutWaiting,
  type WaitOwner,
} from "./mach.ts";
import {
  DARWIN,
  encodeMachMsgHeader,
  MACH_MSG_HEADER_SIZE,
  machMsghBits,
  RECEIVE_OPTIONS,
} from "./structs.ts";
import { runtime } from "../../ffi/runtime.ts";

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
 * ends a pending wait (`MACH_RCV_PORT_CHANGED`: XNU's `ipc_pset_destroy`
 * wakes the set's waiters through `ipc_mqueue_changed`), so a process whose channels
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
      peek: runtime.sharedBytes(PEEK_SIZE), // the wait off this thread writes it
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
          // Stopped meanwhile (the set's destruction ends the wait with MACH_RCV_PORT_CHANGED):
          // this result means nothing.
          if (this.#round !== round) return;
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
    const kr = sendWithoutWaiting(native, this.#interrupt, MACH_MSG_HEADER_SIZE);
    if (messageReturned(kr, this.#interrupt)) {
      // E.g. the queue is full of interrupts already: the message came back with the send right we made.
      reclaimReturnedMessage(native, this.#interrupt);
    }
    // On any other failure the wait still ends by MAX_PARK_MS.
    round.interruptPending = kr === DARWIN.KERN_SUCCESS ||
      (kr & ~DARWIN.MACH_MSG_MASK) === DARWIN.MACH_SEND_TIMED_OUT;
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
      if (kr === DARWIN.KERN_SUCCESS || isBodyError(kr)) destroyReceived(native, buffer);
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
        destroyReceived(native, buffer);
        throw new ClosedError(owner.what, operation);
      }
      return kr;
    }
    if (kr !== DARWIN.MACH_RCV_TIMED_OUT && kr !== DARWIN.MACH_RCV_INTERRUPTED) {
      if (owner.closed) {
        // A partly copied-out body still brought rights and memory: they are ours to free.
        if (isBodyError(kr)) destroyReceived(native, buffer);
        throw new ClosedError(owner.what, operation);
      }
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
