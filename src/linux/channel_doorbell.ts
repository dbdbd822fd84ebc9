/**
 * The doorbell half of one Linux connection (`channel.ts`): its two ends of
 * the doorbell (`doorbell.ts` is the ringer's part, `bell_tower.ts` the
 * reactor's; normative: "Doorbell" in `docs/protocol.md`).
 *
 * - The ring to the peer's bell and the flag page the peer sets while it is
 *   parked: offered in this side's DOORBELL, and rung by a send that finds
 *   the flag set.
 * - This side's own bell and the flag page the peer's DOORBELL brought:
 *   bound when the peer's stream presents the DOORBELL's token; a parked
 *   receive sets the flag and waits on the bell.
 *
 * {@link DoorbellConnection} is a base class of `SocketConnection` (under
 * `SocketSender`, `socket_sender.ts`), not an object beside it, so that what
 * a send and a park check of the doorbell are fields of the connection
 * itself (no object more to reach per frame).
 *
 * @module
 */

import type { PeerCredentials } from "../core/errors.ts";
import { runtime } from "../../ffi/runtime.ts";
import { encodeDoorbell, TOKEN_SIZE } from "../wire/doorbell_wire.ts";
import { type Bell, bellTower } from "./bell_tower.ts";
import {
  createFlagPage,
  doorbellEnabled,
  doorbellStats,
  type FlagPage,
  mapFlagPage,
  newToken,
  openRing,
  ring,
  unmapFlagPage,
} from "./doorbell.ts";
import { closeQuietly } from "./libc.ts";

/** Where the token is in a DOORBELL message (`src/wire/doorbell_wire.ts`). */
const TOKEN_OFFSET = 16;

interface DoorbellResources {
  /** The ring to the peer's doorbell, or -1. */
  ringFd: number;
  /** This side's doorbell, once bound. */
  bell: Bell | undefined;
  /** The peer's parked flag (we ring when it is set) and ours (the peer's DOORBELL brought it). */
  pages: FlagPage[];
}

const doorbellFinalizer = new FinalizationRegistry<DoorbellResources>((r) => {
  if (r.ringFd >= 0) closeQuietly(r.ringFd);
  r.bell?.close();
  for (const page of r.pages) unmapFlagPage(page);
  bellTower.release();
});

/**
 * A connection's doorbell ends: the ring to the peer's bell and this side's
 * own bell, with their flag pages. Holds the bell tower open (see
 * `bell_tower.ts`) from construction to {@link closeDoorbell}.
 */
export abstract class DoorbellConnection {
  /** The process at the other end (its pid names its bell). */
  abstract readonly peer: PeerCredentials;
  readonly #resources: DoorbellResources = { ringFd: -1, bell: undefined, pages: [] };
  #doorbellClosed = false;
  /** The ring to the peer's doorbell, or -1 if it has none. */
  #ringFd = -1;
  /** The peer's parked flag: a message sent while it is set rings the doorbell (and clears it). */
  #peerParked: Int32Array | undefined;
  /** This side's parked flag (on the page the peer's DOORBELL brought), set while parked on the bell. */
  #parked: Int32Array | undefined;
  /** This side's doorbell, bound when the peer's DOORBELL and its stream's HELLO agree. */
  #bell: Bell | undefined;
  /** The peer sent a DOORBELL (only its first counts). */
  #doorbellClaimed = false;
  /** Withdraws a claim whose stream has not come yet. */
  #unclaim: (() => void) | undefined;

  constructor() {
    bellTower.acquire(); // released by closeDoorbell (or by the finalizer)
    doorbellFinalizer.register(this, this.#resources, this);
  }

  /**
   * One `sendmsg(MSG_DONTWAIT)` of `message` with the descriptor `handle`
   * (which stays the caller's to close); false if the socket buffer is
   * full. Throws as a send does (the peer is gone).
   */
  protected abstract trySendWithDescriptor(message: Uint8Array, handle: number): boolean;

  /**
   * Offers the peer this side's rings (see `doorbell.ts`): if the peer has a
   * doorbell, presents a fresh token on it and names the token in a
   * DOORBELL message on this connection. Called once, right after the
   * connection is made; without a doorbell at the peer (or with the peer in
   * this very process), sends nothing.
   */
  offerDoorbell(): void {
    // Both ends in this process share one event loop: no doorbell between them.
    if (this.peer.pid === runtime.pid || !doorbellEnabled()) return;
    const token = newToken();
    const ringFd = openRing(this.peer, token);
    if (ringFd < 0) return;
    const made = createFlagPage();
    if (made === undefined) return closeQuietly(ringFd);
    let sent = false;
    try {
      // The DOORBELL carries the page's memfd (consumed by the send, sent or not).
      sent = this.trySendWithDescriptor(encodeDoorbell(token), made.fd);
    } catch {
      // the peer is gone already: no doorbell
    } finally {
      closeQuietly(made.fd);
    }
    if (!sent) {
      unmapFlagPage(made.page);
      return closeQuietly(ringFd);
    }
    this.#ringFd = ringFd;
    this.#peerParked = made.page.flag;
    this.#resources.ringFd = ringFd;
    this.#resources.pages.push(made.page);
  }

  /** After each message sent: rings the peer's doorbell if its parked flag is set (and clears it). */
  protected ringIfParked(): void {
    const peerParked = this.#peerParked;
    if (peerParked !== undefined && Atomics.exchange(peerParked, 0, 0) !== 0) this.#ring();
  }

  /** Rings the peer's doorbell; a ring the peer closed is dropped. */
  #ring(): void {
    if (ring(this.#ringFd)) return;
    closeQuietly(this.#ringFd);
    this.#ringFd = -1;
    this.#peerParked = undefined;
    this.#resources.ringFd = -1;
  }

  /**
   * The peer's DOORBELL `message` (the receive buffer) with `fd`, the memfd
   * of its flag page (or -1): bind the stream that presents its token. A
   * DOORBELL without a valid page, or after the first, binds nothing.
   * Closes `fd`.
   */
  protected claimDoorbell(fd: number, message: Uint8Array): void {
    const page = fd >= 0 && !this.#doorbellClaimed && !this.#doorbellClosed
      ? mapFlagPage(fd)
      : undefined;
    closeQuietly(fd);
    if (page === undefined) return; // one per connection: a flood of them claims nothing more
    this.#doorbellClaimed = true;
    this.#resources.pages.push(page);
    const token = message.slice(TOKEN_OFFSET, TOKEN_OFFSET + TOKEN_SIZE);
    this.#unclaim = bellTower.claim(token, (bell) => {
      this.#unclaim = undefined;
      if (this.#doorbellClosed) return bell.close();
      this.#bell = bell;
      this.#parked = page.flag;
      this.#resources.bell = bell;
    });
  }

  /** Whether the next park will be on the doorbell (see {@link announcePark}). */
  protected get parksOnBell(): boolean {
    return this.#parked !== undefined && this.#bell!.live;
  }

  /**
   * This side's parked flag if the next park will be on the doorbell (the
   * flag is then set: the caller looks for a message once more before it
   * parks, since the peer only rings for messages sent after it saw the
   * flag), else `undefined`.
   */
  protected announcePark(): Int32Array | undefined {
    const parked = this.#parked;
    if (parked === undefined || !this.#bell!.live) return undefined;
    Atomics.store(parked, 0, 1);
    return parked;
  }

  /**
   * A park on this side's doorbell until it rings (one wake-up, by the
   * runtime's reactor; see `Bell.wait`), or `undefined` if there is no
   * live one: the caller parks on the shared poll instead.
   */
  protected waitForRing(
    operation: string,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<void> | undefined {
    const bell = this.#bell;
    if (bell !== undefined && bell.live) {
      doorbellStats.bellWaits++;
      return bell.wait(operation, deadline, signal);
    }
    return undefined;
  }

  /**
   * Closes the ring and the bell and withdraws a pending claim (after the
   * connection's shutdown, so that the peer woken by the ring's end sees the
   * hang-up). The flag pages stay until {@link unmapFlagPages}. Idempotent.
   */
  protected closeDoorbell(): void {
    if (this.#doorbellClosed) return;
    this.#doorbellClosed = true;
    doorbellFinalizer.unregister(this);
    if (this.#ringFd >= 0) closeQuietly(this.#ringFd);
    this.#ringFd = -1;
    this.#resources.ringFd = -1;
    this.#unclaim?.();
    this.#bell?.close();
    this.#peerParked = undefined;
    this.#parked = undefined;
    bellTower.release();
  }

  /** Unmaps the flag pages, once no wait can still use them (after {@link closeDoorbell}). */
  protected unmapFlagPages(): void {
    for (const page of this.#resources.pages) unmapFlagPage(page);
    this.#resources.pages.length = 0;
  }
}
