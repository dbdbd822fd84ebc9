/**
 * The doorbell: how a parked receive is woken by the runtime's own reactor
 * instead of the shared `poll` on a worker thread (`poller.ts`), which costs
 * two wake-ups (the worker, then the event loop) where a C program blocked
 * in `recvmsg` pays one.
 *
 * Beside a channel's `SOCK_SEQPACKET` connection, each side that can be
 * woken this way keeps a runtime-native Unix stream connection (a
 * `ReactorStream`, watched by the event loop itself). The other side rings
 * it — one byte, `send(MSG_DONTWAIT)` — after each message it sends; the
 * receiver, woken by its reactor, drains the channel with the synchronous
 * `recvmsg` it already has. A ring is only ever a hint: frames, credits and
 * hang-ups travel on the channel and are read there, so a ring from anyone
 * else is at most a spurious wake-up.
 *
 * How the two find each other (normative: "Doorbell" in `docs/protocol.md`):
 *
 * - Each process that can be rung listens (one process-wide
 *   runtime listener — `Deno.listen`, `node:net` on Node and Bun — the
 *   {@link BellTower}) at `DIR/bell-PID`, where DIR is
 *   `$XDG_RUNTIME_DIR/surfaceport` (or `/tmp/surfaceport-UID`), a 0700
 *   directory of this user.
 * - Once a channel's connection exists, each side connects to
 *   `DIR/bell-PEERPID` ({@link openRing}), checks with `SO_PEERCRED` that the
 *   listening process is the channel's peer (same pid and uid), writes a
 *   HELLO with a fresh random token on that stream, and sends the same token
 *   in a DOORBELL message on the channel. The peer binds the stream to the
 *   channel only when both carry the same token.
 * - A peer without a doorbell (C, Python, GStreamer, an older surfaceport)
 *   has nothing listening at its path: nothing is sent, and both directions
 *   keep the shared `poll`. A peer that does not ring never sends DOORBELL,
 *   so its channel is never bound.
 *
 * This file holds what both sides agree on and the ringer's part, plain
 * libc: where doorbells live, opening and ringing a ring, the parked-flag
 * page, the switch and the counters. The receiver's part, which runs on the
 * runtime's reactor (listen, accept, read, ref/unref: the process's
 * `BellTower` and each channel's `Bell`), is `bell_tower.ts`.
 *
 * @module
 */

import { type Pointer, runtime } from "../../ffi/runtime.ts";
import type { PeerCredentials } from "../core/errors.ts";
import { encodeBellHello, TOKEN_SIZE } from "../wire/doorbell_wire.ts";
import {
  closeQuietly,
  cString,
  ERRNO,
  fstatx,
  libc,
  peerCredentials,
  readErrno,
  tryMapShared,
} from "./libc.ts";
import { encodeSockaddrUn, LINUX } from "./structs.ts";

/** `SOCK_STREAM` (the doorbell's socket type; `LINUX` lists only what channels use). */
export const SOCK_STREAM = 1;

/** Encodes doorbell paths. */
export const encoder: TextEncoder = new TextEncoder();

let directory: string | undefined;

/**
 * Where doorbells live: `$XDG_RUNTIME_DIR/surfaceport` where that variable
 * holds an absolute path, else `/tmp/surfaceport-UID`. Read through libc
 * (not `Deno.env`): both ends of a channel must find the same place,
 * whatever permissions each was given.
 */
export function bellDirectory(): string {
  if (directory !== undefined) return directory;
  const value = libc().getenv(cString("XDG_RUNTIME_DIR"));
  const xdg = value === null ? "" : runtime.readCString(value);
  directory = xdg.startsWith("/") && !xdg.includes("\0")
    ? `${xdg.replace(/\/+$/, "")}/surfaceport`
    : `/tmp/surfaceport-${libc().geteuid()}`;
  return directory;
}

/** The doorbell address of process `pid`. */
export function bellPath(pid: number): string {
  return `${bellDirectory()}/bell-${pid}`;
}

/**
 * Opens a ring to `peer`'s doorbell and presents `token` on it: the
 * connected stream's fd, or -1 if `peer` has no doorbell, or the process
 * listening there is not `peer` (pid and uid by `SO_PEERCRED`), or anything
 * fails. Never throws and never waits (a Unix stream connect completes at
 * once or fails).
 */
export function openRing(peer: PeerCredentials, token: Uint8Array): number {
  let address;
  try {
    address = encodeSockaddrUn(encoder.encode(bellPath(peer.pid)), false);
  } catch {
    return -1; // a path too long for sun_path: no doorbell
  }
  const lib = libc();
  const fd = lib.socket(
    LINUX.AF_UNIX,
    SOCK_STREAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) return -1;
  try {
    while (lib.connect(fd, address.bytes, address.length) !== 0) {
      if (readErrno() !== ERRNO.EINTR) return closed(fd);
    }
    const listener = peerCredentials(fd);
    if (listener.pid !== peer.pid || listener.uid !== peer.uid) return closed(fd);
    const hello = encodeBellHello(token);
    const flags = LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL;
    if (lib.send(fd, hello, BigInt(hello.length), flags) !== hello.length) return closed(fd);
    return fd;
  } catch {
    return closed(fd);
  }
}

function closed(fd: number): number {
  closeQuietly(fd);
  return -1;
}

/** A fresh random token. */
export function newToken(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(TOKEN_SIZE));
}

/** Size of the parked-flag page that travels with DOORBELL. */
export const FLAG_PAGE_SIZE = 4096;

/**
 * The memory behind a parked flag: word 0 is non-zero while the page's
 * receiver is parked (or about to park) on its doorbell. The ringer maps it
 * too, and rings only when it finds the flag set, clearing it: no ring (no
 * system call) while the receiver is busy, and one ring per park however
 * many messages a burst brings.
 */
export interface FlagPage {
  readonly pointer: Pointer;
  /** Word 0: the flag. */
  readonly flag: Int32Array;
}

const PAGE_NAME = cString("surfaceport-doorbell");

/**
 * A new flag page for the peer to park on (the ringer's side): a sealed
 * memfd of {@link FLAG_PAGE_SIZE} bytes, mapped here. Returns the page and
 * the memfd to send (the caller closes it once sent).
 */
export function createFlagPage(): { page: FlagPage; fd: number } | undefined {
  const lib = libc();
  const fd = lib.memfd_create(PAGE_NAME, LINUX.MFD_CLOEXEC | LINUX.MFD_ALLOW_SEALING);
  if (fd < 0) return undefined;
  const seals = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL;
  if (
    lib.ftruncate(fd, BigInt(FLAG_PAGE_SIZE)) !== 0 || lib.fcntl(fd, LINUX.F_ADD_SEALS, seals) !== 0
  ) return void closeQuietly(fd);
  const pointer = tryMapShared(fd, FLAG_PAGE_SIZE);
  if (pointer === null) return void closeQuietly(fd);
  return { page: pageAt(pointer), fd };
}

/**
 * Maps the flag page that came with a peer's DOORBELL (the receiver's side),
 * or `undefined` if `fd` is not one: it must be sealed against shrinking and
 * growing (checked before its size, which is then final) and exactly
 * {@link FLAG_PAGE_SIZE} bytes, so that the peer can never make our accesses
 * fault. Whatever the peer writes there later only decides whether it rings.
 * Does not close `fd`.
 */
export function mapFlagPage(fd: number): FlagPage | undefined {
  const seals = libc().fcntl(fd, LINUX.F_GET_SEALS, 0);
  const needed = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW;
  if (seals < 0 || (seals & needed) !== needed) return undefined;
  try {
    const info = fstatx(fd);
    if ((info.mode & 0o170000) !== 0o100000 || info.size !== BigInt(FLAG_PAGE_SIZE)) {
      return undefined; // not a regular file of the page's size
    }
  } catch {
    return undefined;
  }
  const pointer = tryMapShared(fd, FLAG_PAGE_SIZE);
  return pointer === null ? undefined : pageAt(pointer);
}

function pageAt(pointer: Pointer): FlagPage {
  const flag = new Int32Array(runtime.arrayBufferAt(pointer, 4));
  return { pointer, flag };
}

/** Unmaps a flag page (no view of it may be used afterwards). */
export function unmapFlagPage(page: FlagPage): void {
  libc().munmap(page.pointer, BigInt(FLAG_PAGE_SIZE));
}

const RING = new Uint8Array([1]);

/**
 * Rings the doorbell on `fd` (from {@link openRing}): one byte, never
 * waiting. False if the ring is gone for good (the peer closed it): the
 * caller closes `fd` and stops ringing. A full stream (`EAGAIN`) counts as
 * rung: the receiver has unread rings and wakes at once when it parks.
 */
export function ring(fd: number): boolean {
  if (libc().send(fd, RING, 1n, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL) >= 0) return true;
  const errno = readErrno();
  return errno === ERRNO.EAGAIN || errno === ERRNO.EINTR;
}

/**
 * Off unless `SURFACEPORT_DOORBELL=1` is in the environment (Deno: readable
 * with `--allow-env`): measured against the shared poll it woke a parked
 * receive no sooner on Deno and Node and had longer tails on a loaded
 * machine (docs/benchmarks.md, "The doorbell"), so the poll stays the
 * default and the doorbell an option.
 */
let enabled = runtime.env("SURFACEPORT_DOORBELL") === "1";

/**
 * Switches the doorbell on or off for this process from now on (tests and
 * benchmarks): off, it neither opens a doorbell (peers then never ring it,
 * and its parked waits use the shared poll) nor offers rings to its peers.
 */
export function setDoorbellEnabled(value: boolean): void {
  enabled = value;
}

/** Whether this process uses doorbells (see {@link setDoorbellEnabled}). */
export function doorbellEnabled(): boolean {
  return enabled;
}

/** Counters for tests: how parked waits of channels were woken. */
export const doorbellStats = {
  /** Parked waits on a bound doorbell. */
  bellWaits: 0,
  /** Parked waits on the shared poll (no doorbell). */
  pollWaits: 0,
  /** Parked receives woken with nothing to receive (a stale or stranger's ring, a timeout race). */
  emptyWakes: 0,
  /** Deadline timers armed for waits parked on doorbells (one for many parks: see `bell_tower.ts`). */
  deadlineTimers: 0,
};
