/**
 * Linux only: the from-gst bridge's way back to GStreamer. It holds each
 * adopted buffer (its id and surface) until no surfaceport holder uses it
 * any more — which the kernel reports: the OFD locks on the descriptions
 * the publisher sent, probed with `F_OFD_GETLK`, prompted by inotify
 * `IN_CLOSE` events on the memfds and every {@link REPROBE_MS} regardless —
 * and then sends RELEASE_BUFFER.
 *
 * Releases never wait: each is appended to one queue of encoded messages,
 * written with a nonblocking `sendmsg` at once (several in one call when
 * they piled up), and only the rest, if the socket is full, waits for room
 * in the background. The bridge keeps reading buffers meanwhile: a
 * `unixfdsink` writes NEW_BUFFER while holding the lock its release reader
 * needs, so a bridge that stopped reading until a release went out would
 * deadlock with it (it did, after 1-10k frames flat out at 64x64). Nothing
 * here allocates per buffer in the steady state (ids are bytes, the queue
 * and the slots are reused).
 *
 * @module
 */

import { ClosedError, PeerClosedError, TimeoutError } from "../core/errors.ts";
import { check, closeQuietly, libc, procFdPath } from "../linux/libc.ts";
import { newEventFd, type WaitEnded, wake } from "../linux/poller.ts";
import { PollWaiter } from "../linux/poll_wait.ts";
import { LINUX } from "../linux/structs.ts";
import type { Surface } from "../surface/surface.ts";
import { copyBufferId } from "./decode.ts";
import {
  COMMAND_HEADER_SIZE,
  GST_COMMAND,
  type GstNewBuffer,
  RELEASE_BUFFER_SIZE,
} from "./protocol.ts";
import type { UnixFdConnection } from "./socket.ts";

/** Re-probe held buffers at least this often even without an inotify event (events are hints). */
const REPROBE_MS = 200;
/** The buffer inotify events are drained into, and its length as `read` takes it. */
const EVENT_BUFFER_BYTES = 4096;
const EVENT_BUFFER_LENGTH = BigInt(EVENT_BUFFER_BYTES);
/** Bytes of one RELEASE_BUFFER message. */
const RELEASE_MESSAGE_SIZE = COMMAND_HEADER_SIZE + RELEASE_BUFFER_SIZE;

/**
 * The buffers one from-gst connection holds for surfaceport consumers, and
 * the RELEASE_BUFFER messages that give them (and every buffer not held)
 * back. Owns an inotify descriptor and a wake eventfd; {@link close} is
 * idempotent.
 */
export class HeldBuffers {
  readonly #connection: UnixFdConnection;
  readonly #capacity: number;
  /** The held buffers' ids, 8 bytes each as the sink sent them, slot by slot. */
  readonly #ids: Uint8Array;
  readonly #surfaces: (Surface | undefined)[];
  #count = 0;
  readonly #id = new Uint8Array(8);
  /** Encoded RELEASE_BUFFER messages not yet written, back to back from byte 0. */
  #queue = new Uint8Array(64 * RELEASE_MESSAGE_SIZE);
  #queued = 0;
  /** Bytes of releases written to the socket so far (whole messages: {@link released}). */
  #written = 0;
  #flushing = false;
  #failure: Error | undefined;
  /** The sink closed its end: releases have nowhere to go. */
  #peerGone = false;
  #inotify = -1;
  #wakeFd = -1;
  /** The watch loop runs (between {@link watchLoop} and its end). */
  #loopRunning = false;
  /** The watch loop's wait, re-armed per wake (made at its first start). */
  #watcher: PollWaiter | undefined;
  /** The watch loop sleeps (nothing held, its wait not armed): {@link hold} arms it. */
  #sleeping = false;
  #watchEnded: () => void = ignore;
  #watchFailed: (error: unknown) => void = ignore;
  /** Where the inotify events are drained to (which memfd closed does not matter). */
  readonly #events = new Uint8Array(EVENT_BUFFER_BYTES);
  #closed = false;

  /** Holds up to `capacity` buffers of `connection` (which stays the caller's). */
  constructor(connection: UnixFdConnection, capacity: number) {
    this.#connection = connection;
    this.#capacity = capacity;
    this.#ids = new Uint8Array(8 * capacity);
    this.#surfaces = new Array(capacity).fill(undefined);
    this.#inotify = check(
      "inotify_init1",
      libc().inotify_init1(LINUX.IN_NONBLOCK | LINUX.IN_CLOEXEC),
    );
    try {
      this.#wakeFd = newEventFd();
    } catch (error) {
      closeQuietly(this.#inotify);
      throw error;
    }
  }

  /** Buffers held right now. */
  get size(): number {
    return this.#count;
  }

  /** True when {@link capacity} buffers are held: a new one must go back at once. */
  get full(): boolean {
    return this.#count >= this.#capacity;
  }

  /** RELEASE_BUFFER messages written to the socket. */
  get released(): number {
    return Math.floor(this.#written / RELEASE_MESSAGE_SIZE);
  }

  /** Why giving buffers back failed (the connection was closed then), if it did. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** True if a buffer with `buffer`'s id is held. */
  holds(buffer: GstNewBuffer): boolean {
    return this.#slotOf(buffer) >= 0;
  }

  #slotOf(buffer: GstNewBuffer): number {
    const id = this.#id;
    copyBufferId(buffer, id, 0);
    const ids = this.#ids;
    for (let slot = 0; slot < this.#count; slot++) {
      let same = true;
      for (let i = 0; i < 8 && same; i++) same = ids[8 * slot + i] === id[i];
      if (same) return slot;
    }
    return -1;
  }

  /**
   * Asks for an inotify `IN_CLOSE` event on the memfd `fd` (best effort: at
   * the watch limit the {@link REPROBE_MS} re-probes still release).
   */
  watch(fd: number): void {
    libc().inotify_add_watch(
      this.#inotify,
      procFdPath(fd),
      LINUX.IN_CLOSE_WRITE | LINUX.IN_CLOSE_NOWRITE,
    );
  }

  /**
   * Holds `buffer` (not {@link full}, not already held) for `surface`, which
   * is closed and the buffer released once no holder uses it; probes at once.
   */
  hold(buffer: GstNewBuffer, surface: Surface): void {
    const slot = this.#count++;
    copyBufferId(buffer, this.#ids, 8 * slot);
    this.#surfaces[slot] = surface;
    this.probe();
    if (this.#count > 0 && this.#sleeping) {
      // The watch loop slept with nothing held: it watches from now on.
      this.#armWatch();
    }
  }

  /** Gives `buffer` (not held) back to GStreamer. */
  release(buffer: GstNewBuffer): void {
    this.#enqueue(buffer);
    this.#flush();
  }

  /** Gives back every held buffer no surfaceport holder uses any more. */
  probe(): void {
    let releases = 0;
    for (let slot = 0; slot < this.#count;) {
      const surface = this.#surfaces[slot]!;
      if (surface.inUse) {
        slot++;
        continue;
      }
      surface.close();
      this.#enqueueId(this.#ids, 8 * slot);
      releases++;
      // The last slot moves into this one.
      const last = --this.#count;
      this.#ids.copyWithin(8 * slot, 8 * last, 8 * last + 8);
      this.#surfaces[slot] = this.#surfaces[last];
      this.#surfaces[last] = undefined;
    }
    if (releases > 0) this.#flush();
  }

  #enqueue(buffer: GstNewBuffer): void {
    copyBufferId(buffer, this.#id, 0);
    this.#enqueueId(this.#id, 0);
  }

  #enqueueId(from: Uint8Array, at: number): void {
    if (this.#closed || this.#peerGone) return;
    if (this.#queued + RELEASE_MESSAGE_SIZE > this.#queue.length) {
      const grown = new Uint8Array(this.#queue.length * 2);
      grown.set(this.#queue.subarray(0, this.#queued));
      this.#queue = grown;
    }
    const queue = this.#queue;
    const start = this.#queued;
    queue[start] = GST_COMMAND.RELEASE_BUFFER;
    queue[start + 1] = queue[start + 2] = queue[start + 3] = 0;
    queue[start + 4] = RELEASE_BUFFER_SIZE;
    queue[start + 5] = queue[start + 6] = queue[start + 7] = 0;
    for (let i = 0; i < 8; i++) queue[start + COMMAND_HEADER_SIZE + i] = from[at + i];
    this.#queued += RELEASE_MESSAGE_SIZE;
  }

  /** Writes what the socket takes now; the rest waits for room in {@link #flushLater}. */
  #flush(): void {
    if (this.#flushing || this.#queued === 0 || this.#closed) return;
    try {
      this.#wrote(this.#connection.trySend(this.#queue, this.#queued));
    } catch (error) {
      this.#fail(error as Error);
      return;
    }
    if (this.#queued > 0) this.#flushLater();
  }

  #wrote(n: number): void {
    if (n <= 0) return;
    this.#queue.copyWithin(0, n, this.#queued);
    this.#queued -= n;
    this.#written += n;
  }

  async #flushLater(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#queued > 0 && !this.#closed) {
        await this.#connection.waitWritable();
        if (this.#closed) break;
        this.#wrote(this.#connection.trySend(this.#queue, this.#queued));
      }
    } catch (error) {
      this.#fail(error as Error);
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * A release that could not be written: the peer went away (the bridge's
   * receive sees it) or a real error, kept for {@link failure}, which closes
   * the connection so that the receive ends.
   */
  #fail(error: Error): void {
    this.#queued = 0;
    if (error instanceof PeerClosedError) {
      // Nobody to give buffers back to: later releases are dropped, not each met with a new error
      // (with its stack trace) as the sink's memfds close after it.
      this.#peerGone = true;
      return;
    }
    if (this.#closed || error instanceof ClosedError) return;
    this.#failure ??= error;
    this.#connection.close();
  }

  /**
   * Probes the held buffers whenever inotify reports a close on one of their
   * memfds, and every {@link REPROBE_MS} while any is held, until
   * {@link close}; sleeps while none is held. Resolves when it ends, having
   * closed the inotify and wake descriptors; rejects if its wait failed.
   * Its wait is one record re-armed per wake and calling back (no promise
   * or suspended loop per wake: a consumer that lets go of each frame wakes
   * it per frame).
   */
  watchLoop(): Promise<void> {
    if (this.#loopRunning) {
      return Promise.reject(new Error("internal: HeldBuffers.watchLoop runs already"));
    }
    if (this.#closed) {
      this.#closeWatchFds();
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.#loopRunning = true;
      this.#watchEnded = resolve;
      this.#watchFailed = reject;
      this.#watcher ??= new PollWaiter(this.#woken);
      this.#continueWatch();
    });
  }

  /** Arms the watch loop's wait, or lets it sleep while nothing is held; ends it on failure. */
  #continueWatch(): void {
    if (this.#count === 0) {
      this.#sleeping = true;
      return;
    }
    try {
      this.#armWatch();
    } catch (error) {
      this.#endWatch(error);
    }
  }

  #armWatch(): void {
    this.#sleeping = false;
    this.#watcher!.arm(
      this.#inotify,
      LINUX.POLLIN,
      this.#wakeFd,
      "release",
      performance.now() + REPROBE_MS,
      undefined,
    );
  }

  /** The watch loop's wait ended: an inotify event, a re-probe's time, close(), or a failure. */
  readonly #woken: WaitEnded = (_ready, failure) => {
    if (failure !== undefined && !(failure instanceof TimeoutError)) {
      return this.#endWatch(failure);
    }
    while (libc().read(this.#inotify, this.#events, EVENT_BUFFER_LENGTH) > 0) {
      // drain: which memfd it was does not matter, every held one is probed
    }
    if (this.#closed) return this.#endWatch(undefined);
    try {
      this.probe();
    } catch {
      // F_OFD_GETLK failed: the next probe (or the bridge's next buffer) tries again
    }
    this.#continueWatch();
  };

  /** Ends the watch loop (no poll watches its descriptors any more: they are closed). */
  #endWatch(failure: unknown): void {
    this.#loopRunning = false;
    this.#sleeping = false;
    this.#closeWatchFds();
    const settle = failure === undefined ? this.#watchEnded : this.#watchFailed;
    this.#watchEnded = this.#watchFailed = ignore;
    settle(failure);
  }

  #closeWatchFds(): void {
    closeQuietly(this.#inotify);
    closeQuietly(this.#wakeFd);
    this.#inotify = -1;
    this.#wakeFd = -1;
  }

  /**
   * Closes the surfaces still held (consumers keep theirs; GStreamer drops
   * its references when the connection closes) and ends the watch loop.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (let slot = 0; slot < this.#count; slot++) {
      this.#surfaces[slot]!.close();
      this.#surfaces[slot] = undefined;
    }
    this.#count = 0;
    this.#queued = 0;
    if (this.#sleeping) {
      this.#endWatch(undefined); // no poll watches its fds
    } else if (this.#loopRunning) {
      // Its poll sees the wake at once; the loop then closes the fds.
      wake(this.#wakeFd);
    } else {
      this.#closeWatchFds();
    }
  }
}

function ignore(): void {}
