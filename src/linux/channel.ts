/**
 * The Linux transport, one connection: a connected `SOCK_SEQPACKET` Unix
 * socket (message boundaries and hang-up detection from the kernel), one fd
 * per surface message in `SCM_RIGHTS`. How connections come to be (listen,
 * accept, connect, `SO_PEERCRED`) is in `listener.ts`; the receive buffers and
 * the checked decoding of each received message in `socket_receiver.ts`.
 * Two base classes hold the rest: `socket_sender.ts` the buffers a
 * `sendmsg` reads and the nonblocking send itself, `channel_doorbell.ts` (its
 * base) the connection's doorbell (the ring to the peer, its own bell, their
 * flag pages).
 *
 * Every socket call is made with `MSG_DONTWAIT` on the JS thread first; only
 * when the kernel has nothing for us do we park on a nonblocking `poll` (one
 * thread hop), which also watches an eventfd so that `close()` and an abort
 * signal wake it at once.
 *
 * @module
 */

import type {
  BackendConnection,
  ConnectionLimits,
  ControlWoken,
  ReceivedMessage,
  ReceiveEnded,
} from "../contract/backend.ts";
import { ClosedError, type PeerCredentials, throwIfAborted } from "../core/errors.ts";
import { doorbellStats } from "./doorbell.ts";
import { closeQuietly, libc } from "./libc.ts";
import { newEventFd, wake } from "./poller.ts";
import { PollWaiter, waitReady } from "./poll_wait.ts";
import { MappingCache } from "./received.ts";
import { SocketReceiver } from "./socket_receiver.ts";
import { SocketSender } from "./socket_sender.ts";
import { refillSpareDescriptions } from "./surface.ts";
import { LINUX } from "./structs.ts";

/**
 * How many failed `recvmsg` attempts a spinning receive makes between two
 * looks at the clock (each attempt ~1 µs): the spin ends at most that much
 * late, and no clock read (~0.1 µs and a 32-byte heap number) is paid per
 * attempt.
 */
const SPIN_CLOCK_EVERY = 16;

interface ConnectionResources {
  fds: number[];
  cache: MappingCache;
}

// The doorbell's resources have their own finalizer (`channel_doorbell.ts`).
const connectionFinalizer = new FinalizationRegistry<ConnectionResources>((r) => {
  r.cache.close();
  for (const fd of r.fds) closeQuietly(fd);
});

function ignoreValue(): void {}

/** The connection whose receive promise is being made: {@link captureReceiveResolvers} fills it. */
let capturingConnection: SocketConnection | undefined;

/** Takes a receive promise's resolvers into {@link capturingConnection} (no closure per receive). */
let captureReceiveResolvers: (
  resolve: (message: ReceivedMessage) => void,
  reject: (error: unknown) => void,
) => void;

/** One end of a connected `SOCK_SEQPACKET` socket. */
export class SocketConnection extends SocketSender implements BackendConnection {
  readonly peer: PeerCredentials;
  readonly #fd: number;
  readonly #sendWake: number;
  readonly #receiveWake: number;
  readonly #limits: ConnectionLimits;
  readonly #cache: MappingCache;
  #closed = false;
  #pendingWaits = 0;
  /** The last tryReceive() found nothing, and receive() has not run since. */
  #foundEmpty = false;
  readonly #resources: ConnectionResources;
  readonly #receiver: SocketReceiver;
  /** The running parked receive's promise and its resolvers, deadline and signal. */
  #receiving: Promise<ReceivedMessage> | undefined;
  #resolveReceive: (message: ReceivedMessage) => void = ignoreValue;
  #rejectReceive: (error: unknown) => void = ignoreValue;
  /** The running parked receiveThen's callback. */
  #receiveEndedCallback: ReceiveEnded | undefined;
  #receiveDeadline = Infinity;
  #receiveSignal: AbortSignal | undefined;
  /** This side's parked flag while the running receive is parked on the doorbell. */
  #receiveParked: Int32Array | undefined;
  /** The running receive's one wait record in the shared poll (re-armed per park). */
  readonly #receiveWaiter: PollWaiter;
  /** A publisher's wait for control messages ({@link waitControlThen}), made at its first. */
  #controlWaiter: PollWaiter | undefined;
  #controlWoken: ControlWoken | undefined;

  static {
    captureReceiveResolvers = (resolve, reject) => {
      capturingConnection!.#resolveReceive = resolve;
      capturingConnection!.#rejectReceive = reject;
    };
  }

  constructor(fd: number, peer: PeerCredentials, limits: ConnectionLimits) {
    const sendWake = newEventFd();
    let receiveWake: number;
    try {
      receiveWake = newEventFd();
    } catch (error) {
      closeQuietly(sendWake);
      throw error;
    }
    super(fd); // holds the bell tower open until close (or the finalizer)
    this.#fd = fd;
    this.peer = peer;
    this.#limits = limits;
    // Channel senders send OFD-locked descriptions: forwarding dup()s them.
    this.#cache = new MappingCache(limits.mappingCacheSize, limits, true);
    this.#sendWake = sendWake;
    this.#receiveWake = receiveWake;
    this.#receiver = new SocketReceiver(
      fd,
      limits,
      this.#cache,
      (fd) => this.claimDoorbell(fd, this.#receiver.buffer),
    );
    this.#receiveWaiter = new PollWaiter(this.#receiveWoken);
    this.#resources = { fds: [fd, sendWake, receiveWake], cache: this.#cache };
    connectionFinalizer.register(this, this.#resources, this);
  }

  /**
   * Parks until the peer may have sent something: on the doorbell when it
   * rings (one wake-up, by the runtime's reactor), else on the shared poll.
   * Not an async function: a park per frame adds one `then` to the wait's
   * promise, not a suspended frame of its own.
   */
  #park(operation: string, deadline: number, signal?: AbortSignal): Promise<unknown> {
    this.#pendingWaits++;
    let parked: Promise<unknown>;
    try {
      const rung = this.waitForRing(operation, deadline, signal);
      if (rung !== undefined) parked = rung;
      else {
        doorbellStats.pollWaits++;
        parked = waitReady(this.#fd, LINUX.POLLIN, this.#receiveWake, operation, deadline, signal);
      }
    } catch (error) {
      this.#parkEnded();
      return Promise.reject(error);
    }
    return parked.then(this.#parkEnded, this.#parkFailed);
  }

  /** A wait on this connection's descriptors ended: the last after close() closes them. */
  readonly #parkEnded = (): void => {
    if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
  };

  readonly #parkFailed = (error: unknown): never => {
    this.#parkEnded();
    throw error;
  };

  async send(
    message: Uint8Array,
    handle: number,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      this.#assertOpen("send");
      throwIfAborted(signal);
      while (!this.trySendWithDescriptor(message, handle)) {
        await this.#wait(LINUX.POLLOUT, this.#sendWake, "send", deadline, signal);
        this.#assertOpen("send");
      }
    } finally {
      // A queued message holds its own reference to the description; ours goes either way.
      closeQuietly(handle);
    }
  }

  trySend(message: Uint8Array, handle: number): boolean {
    try {
      this.#assertOpen("send");
      if (!this.trySendWithDescriptor(message, handle)) return false;
    } catch (error) {
      closeQuietly(handle);
      throw error;
    }
    closeQuietly(handle); // the queued message holds its own reference
    return true;
  }

  tryReceive(): ReceivedMessage | undefined {
    this.#assertOpen("receive");
    const message = this.#receiver.tryReceive();
    this.#foundEmpty = message === undefined;
    return message;
  }

  async sendControl(message: Uint8Array, deadline: number, signal?: AbortSignal): Promise<void> {
    this.#assertOpen("send");
    throwIfAborted(signal);
    while (!this.trySendWithoutDescriptor(message)) {
      await this.#wait(LINUX.POLLOUT, this.#sendWake, "send", deadline, signal);
      this.#assertOpen("send");
    }
  }

  trySendControl(message: Uint8Array): boolean {
    this.#assertOpen("send");
    return this.trySendWithoutDescriptor(message);
  }

  unreadByPeer(): number {
    this.#assertOpen("send");
    return this.unsentBytes();
  }

  async receiveControl(deadline: number, signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      this.#assertOpen("receive");
      throwIfAborted(signal);
      let message = this.#receiver.tryReceiveControl();
      if (message) return message;
      const parked = this.announcePark();
      if (parked !== undefined) {
        message = this.#receiver.tryReceiveControl();
        if (message) {
          Atomics.store(parked, 0, 0);
          return message;
        }
      }
      await this.#park("receive", deadline, signal);
      if (parked !== undefined && !this.#closed) Atomics.store(parked, 0, 0);
    }
  }

  tryReceiveControl(): Uint8Array | undefined {
    this.#assertOpen("receive");
    return this.#receiver.tryReceiveControl();
  }

  waitControlThen(woken: ControlWoken): boolean {
    this.#assertOpen("receive");
    if (this.parksOnBell) return false;
    if (this.#controlWoken !== undefined) {
      throw new Error("internal: a control wait is parked on this connection already");
    }
    // A publisher's connection parks no receive: the wake fd is free for this wait.
    const waiter = this.#controlWaiter ??= new PollWaiter(this.#controlWaitEnded);
    waiter.arm(this.#fd, LINUX.POLLIN, this.#receiveWake, "receive", Infinity, undefined);
    this.#controlWoken = woken;
    this.#pendingWaits++;
    doorbellStats.pollWaits++;
    return true;
  }

  /** The parked {@link waitControlThen} ended. */
  readonly #controlWaitEnded = (_ready: boolean, failure: unknown): void => {
    this.#parkEnded();
    const woken = this.#controlWoken!;
    this.#controlWoken = undefined;
    woken(failure);
  };

  receive(deadline: number, signal?: AbortSignal): Promise<ReceivedMessage> {
    let message;
    try {
      message = this.#receiveAtOnce(deadline, signal);
    } catch (error) {
      return Promise.reject(error);
    }
    if (message) return Promise.resolve(message);
    if (this.#receiveEndedCallback !== undefined) {
      return Promise.reject(new Error("internal: a receiveThen is parked on this connection"));
    }
    // One parked receive at a time keeps its state in fields (the channel and the subscription
    // queue theirs); another that comes meanwhile waits for it first.
    if (this.#receiving !== undefined) {
      return this.#receiving.then(
        () => this.receive(deadline, signal),
        () => this.receive(deadline, signal),
      );
    }
    capturingConnection = this;
    const promise = new Promise<ReceivedMessage>(captureReceiveResolvers);
    capturingConnection = undefined;
    this.#receiving = promise;
    this.#receiveDeadline = deadline;
    this.#receiveSignal = signal;
    this.#parkReceive();
    return promise;
  }

  receiveThen(deadline: number, signal: AbortSignal | undefined, ended: ReceiveEnded): void {
    let message;
    try {
      message = this.#receiveAtOnce(deadline, signal);
      if (!message && (this.#receiving !== undefined || this.#receiveEndedCallback !== undefined)) {
        throw new Error("internal: a receive is parked on this connection already");
      }
    } catch (error) {
      return ended(undefined, error);
    }
    if (message) return ended(message, undefined);
    this.#receiveEndedCallback = ended;
    this.#receiveDeadline = deadline;
    this.#receiveSignal = signal;
    this.#parkReceive();
  }

  /** The message already here, or after the spin of the low-latency mode; throws as receive does. */
  #receiveAtOnce(deadline: number, signal: AbortSignal | undefined): ReceivedMessage | undefined {
    this.#assertOpen("receive");
    throwIfAborted(signal);
    // A tryReceive() that just found nothing (the channel's fast path) need not be repeated:
    // one recvmsg less per receive that waits. What arrives meanwhile, the spin or poll sees.
    const message = this.#foundEmpty ? undefined : this.#receiver.tryReceive();
    this.#foundEmpty = false;
    if (message) return message;
    // About to wait: the time to reopen the descriptions that sends used (not while sending).
    refillSpareDescriptions();
    return this.#limits.spinMicros > 0 ? this.#spin(deadline) : undefined;
  }

  /**
   * Low-latency mode: retries on this thread before paying the hop to a
   * worker thread. The clock is read every SPIN_CLOCK_EVERY attempts, not on
   * each.
   */
  #spin(deadline: number): ReceivedMessage | undefined {
    const spinUntil = Math.min(performance.now() + this.#limits.spinMicros / 1000, deadline);
    do {
      for (let i = 0; i < SPIN_CLOCK_EVERY; i++) {
        const message = this.#receiver.tryReceive();
        if (message) return message;
      }
    } while (performance.now() < spinUntil);
    return undefined;
  }

  /**
   * Parks the running receive until the peer may have sent something: on
   * the doorbell when it rings (one wake-up, by the runtime's reactor), else
   * in the shared poll through this connection's one {@link PollWaiter},
   * re-armed for every park (no promise, closure or suspended frame per
   * park). {@link #receiveWoken} looks again.
   */
  #parkReceive(): void {
    try {
      const parked = this.announcePark();
      if (parked !== undefined) {
        const message = this.#receiver.tryReceive();
        if (message) {
          Atomics.store(parked, 0, 0);
          return this.#receiveEnded(message, undefined);
        }
      }
      this.#receiveParked = parked;
      this.#pendingWaits++;
      try {
        const rung = this.waitForRing("receive", this.#receiveDeadline, this.#receiveSignal);
        if (rung !== undefined) rung.then(this.#bellRang, this.#bellFailed);
        else {
          doorbellStats.pollWaits++;
          this.#receiveWaiter.arm(
            this.#fd,
            LINUX.POLLIN,
            this.#receiveWake,
            "receive",
            this.#receiveDeadline,
            this.#receiveSignal,
          );
        }
      } catch (error) {
        this.#pendingWaits--;
        throw error;
      }
    } catch (error) {
      this.#receiveEnded(undefined, error);
    }
  }

  readonly #bellRang = (): void => this.#receiveWoken(true, undefined);

  readonly #bellFailed = (error: unknown): void => this.#receiveWoken(false, error);

  /** A park of the running receive ended: look again, park again, or settle it. */
  readonly #receiveWoken = (_ready: boolean, failure: unknown): void => {
    this.#parkEnded();
    const parked = this.#receiveParked;
    this.#receiveParked = undefined;
    if (parked !== undefined && !this.#closed) Atomics.store(parked, 0, 0);
    if (failure !== undefined) return this.#receiveEnded(undefined, failure);
    let message;
    try {
      this.#assertOpen("receive");
      throwIfAborted(this.#receiveSignal);
      message = this.#receiver.tryReceive();
    } catch (error) {
      return this.#receiveEnded(undefined, error);
    }
    if (message) return this.#receiveEnded(message, undefined);
    doorbellStats.emptyWakes++;
    this.#parkReceive();
  };

  /** Settles the running receive with `message`, or with `failure` if there is none. */
  #receiveEnded(message: ReceivedMessage | undefined, failure: unknown): void {
    const ended = this.#receiveEndedCallback;
    if (ended !== undefined) {
      this.#receiveEndedCallback = undefined;
      this.#receiveSignal = undefined;
      return ended(message, failure);
    }
    const resolve = this.#resolveReceive;
    const reject = this.#rejectReceive;
    this.#receiving = undefined;
    this.#resolveReceive = ignoreValue;
    this.#rejectReceive = ignoreValue;
    this.#receiveSignal = undefined; // (it may hold a signal's listeners alive)
    if (message) resolve(message);
    else reject(failure);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    connectionFinalizer.unregister(this);
    // Wake pending waits; they see #closed and throw ClosedError. The fds are
    // closed only when no poll can still be watching them, so their numbers
    // are never reused under a pending poll.
    wake(this.#sendWake);
    wake(this.#receiveWake);
    libc().shutdown(this.#fd, LINUX.SHUT_RDWR);
    // After the shutdown, so that the peer woken by the ring's end sees the hang-up.
    this.closeDoorbell();
    this.#cache.close();
    if (this.#pendingWaits === 0) this.#closeFds();
  }

  /** Closes the descriptors and unmaps the flag pages, once no wait can still use them. */
  #closeFds(): void {
    // A parked receive that wakes after close() still clears its flag: only then may its page go.
    this.unmapFlagPages();
    closeQuietly(this.#fd);
    closeQuietly(this.#sendWake);
    closeQuietly(this.#receiveWake);
  }

  async #wait(
    events: number,
    wakeFd: number,
    operation: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<void> {
    this.#pendingWaits++;
    try {
      await waitReady(this.#fd, events, wakeFd, operation, deadline, signal);
    } finally {
      this.#parkEnded();
    }
  }

  #assertOpen(operation: string): void {
    if (this.#closed) throw new ClosedError("channel", operation);
  }
}
