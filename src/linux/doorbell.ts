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
 * The reactor part (listen, accept, read, ref/unref) is the small
 * {@link BellTower} / {@link Bell} pair below; the ringing part is plain libc.
 *
 * @module
 */

import {
  type Pointer,
  type ReactorListener,
  type ReactorStream,
  runtime,
} from "../../ffi/runtime.ts";
import type { PeerCredentials } from "../core/errors.ts";
import { TimeoutError } from "../core/errors.ts";
import {
  BELL_HELLO_SIZE,
  decodeBellHello,
  encodeBellHello,
  TOKEN_SIZE,
  tokenKey,
} from "../wire/doorbell_wire.ts";
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

const SOCK_STREAM = 1;
/** How long an accepted stream may take to present its HELLO. */
const HELLO_TIMEOUT_MS = 2000;
/** How long a presented token waits for its DOORBELL on a channel. */
const CLAIM_TIMEOUT_MS = 10_000;
/** At most this many accepted streams wait for their HELLO or their channel (the oldest go). */
const MAX_WAITING = 64;

const encoder = new TextEncoder();

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
 * The receiving end of one channel's doorbell: a parked wait is one read on
 * the runtime's own stream connection. Rings are coalesced by reading: one
 * read takes every unread ring (up to 64), so a burst wakes a parked
 * receiver once, and rings that came while it was busy make its next park
 * return at once (it then finds the frames, or nothing, and parks again).
 */
export class Bell {
  readonly #conn: ReactorStream;
  readonly #buffer = new Uint8Array(64);
  #read: Promise<void> | undefined;
  #waiters = 0;
  #ended = false;
  #closed = false;
  #claimed = false;

  constructor(conn: ReactorStream) {
    this.#conn = conn;
    conn.unref(); // only a pending wait keeps the process alive
  }

  /** False once the ringer hung up or the bell was closed: park elsewhere. */
  get live(): boolean {
    return !this.#ended;
  }

  /**
   * Resolves at the next ring (at once if rings are unread), when the ringer
   * hangs up, or when the bell is closed; rejects with a `TimeoutError` at
   * `deadline` (ms, `performance.now()` clock) or with the abort reason.
   */
  wait(operation: string, deadline: number, signal?: AbortSignal): Promise<void> {
    const read = this.#read ??= this.#readRings();
    if (this.#waiters++ === 0) this.#conn.ref();
    if (deadline === Infinity && signal === undefined) return read;
    const remaining = deadline - performance.now();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (error?: unknown) => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) return resolve();
        if (--this.#waiters === 0 && this.#read !== undefined) this.#conn.unref();
        reject(error);
      };
      const onAbort = () => settle(signal!.reason);
      const timer = deadline === Infinity ? undefined : setTimeout(
        () => settle(new TimeoutError(operation, Math.round(remaining))),
        Math.max(0, remaining),
      );
      signal?.addEventListener("abort", onAbort, { once: true });
      read.then(() => settle());
    });
  }

  async #readRings(): Promise<void> {
    try {
      if (await this.#conn.read(this.#buffer) === null) this.#ended = true;
    } catch {
      this.#ended = true; // closed under the read, or reset
    } finally {
      this.#read = undefined;
      this.#waiters = 0;
    }
  }

  /**
   * While no channel has claimed this bell: reads (without keeping the
   * process alive) until the ringer hangs up, then calls `onEnd`, so that a
   * stream whose DOORBELL never comes holds no descriptor past its ringer.
   * Returns when a channel claims it ({@link claimed}) or it ends.
   */
  async watchUnclaimed(onEnd: () => void): Promise<void> {
    while (!this.#ended && !this.#claimed) await (this.#read ??= this.#readRings());
    if (this.#ended && !this.#claimed) onEnd();
  }

  /** A channel took this bell: {@link watchUnclaimed} stops. */
  claimed(): void {
    this.#claimed = true;
  }

  /** Closes the stream; a pending wait resolves. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    closeConn(this.#conn);
  }
}

interface Claim {
  /** A stream that presented the token, waiting for its channel's DOORBELL. */
  bell?: Bell;
  timer?: ReturnType<typeof setTimeout>;
  /** A channel whose DOORBELL named the token, waiting for its stream. */
  bind?: (bell: Bell) => void;
}

/**
 * This process's doorbell listener, open while any channel endpoint or
 * listener of this process may be rung ({@link acquire} / {@link release}).
 * Where it cannot be opened (no `--allow-read`/`--allow-write` for its
 * directory, a directory that is not this user's alone) there is none, and
 * peers fall back to the shared `poll`. Deno asks for `--allow-read`,
 * `--allow-write` and `--allow-net` (unrestricted: its net permission names
 * a Unix socket by its exact path, which holds our pid) to listen on a Unix
 * socket; ringing a peer needs none of them.
 */
class BellTower {
  #users = 0;
  #listener: ReactorListener | undefined;
  #path = "";
  readonly #claims = new Map<string, Claim>();
  /** Accepted streams that have not presented a HELLO yet, with their timers. */
  readonly #greeting = new Map<ReactorStream, ReturnType<typeof setTimeout>>();

  acquire(): void {
    if (this.#users++ === 0) this.#open();
  }

  release(): void {
    if (this.#users > 0 && --this.#users === 0) this.#close();
  }

  /** True while this process can be rung. */
  get open(): boolean {
    return this.#listener !== undefined;
  }

  #open(): void {
    if (!enabled) return;
    let dir: string;
    try {
      dir = bellDirectory();
    } catch {
      return;
    }
    const { files } = runtime;
    if (!files.mayAccess("read", dir) || !files.mayAccess("write", dir)) return; // never prompt
    try {
      files.makeDirectory(dir, 0o700);
      const info = files.lstat(dir);
      if (!info.isDirectory || info.uid !== libc().geteuid() || (info.mode & 0o077) !== 0) {
        return; // not ours alone: a stranger could reach the doorbell
      }
      const path = `${dir}/bell-${runtime.pid}`;
      if (isStale(path)) files.remove(path); // left by a process that had our pid and died
      const listener = runtime.listenUnix(path, (stream) => this.#greet(stream));
      if (listener === undefined) return; // without the permissions: the shared poll
      this.#listener = listener;
      this.#path = path;
    } catch {
      // no doorbell: every wait stays on the shared poll
    }
  }

  #close(): void {
    const listener = this.#listener;
    if (!listener) return;
    this.#listener = undefined;
    listener.close();
    try {
      runtime.files.remove(this.#path); // (Deno removes it itself; Node does not)
    } catch {
      // gone already
    }
    for (const [conn, timer] of this.#greeting) {
      clearTimeout(timer);
      closeConn(conn);
    }
    this.#greeting.clear();
    for (const claim of this.#claims.values()) {
      clearTimeout(claim.timer);
      claim.bell?.close();
    }
    this.#claims.clear();
  }

  /** Reads the HELLO of a new stream (bounded in time and number), then offers it. */
  async #greet(conn: ReactorStream): Promise<void> {
    conn.unref();
    if (this.#greeting.size >= MAX_WAITING) {
      const [oldest, timer] = this.#greeting.entries().next().value!;
      clearTimeout(timer);
      this.#greeting.delete(oldest);
      closeConn(oldest);
    }
    const timer = setTimeout(() => {
      this.#greeting.delete(conn);
      closeConn(conn);
    }, HELLO_TIMEOUT_MS);
    this.#greeting.set(conn, timer);
    let token: Uint8Array | undefined;
    try {
      const hello = new Uint8Array(BELL_HELLO_SIZE);
      let got = 0;
      while (got < BELL_HELLO_SIZE) {
        const n = await conn.read(hello.subarray(got));
        if (n === null) break;
        got += n;
      }
      if (got === BELL_HELLO_SIZE) token = decodeBellHello(hello);
    } catch {
      // closed meanwhile (timeout, or the tower closed)
    }
    if (!this.#greeting.has(conn)) return; // timed out or dropped: closed already
    clearTimeout(timer);
    this.#greeting.delete(conn);
    if (token === undefined) return closeConn(conn);
    this.#offer(tokenKey(token), new Bell(conn));
  }

  /** A stream presented `key`: bind it to the channel that claimed it, or keep it a while. */
  #offer(key: string, bell: Bell): void {
    const claim = this.#claims.get(key);
    if (claim?.bind) {
      this.#claims.delete(key);
      bell.claimed();
      claim.bind(bell);
      return;
    }
    if (claim || this.#claims.size >= MAX_WAITING) return bell.close(); // a second stream for one token
    const drop = () => {
      const waiting = this.#claims.get(key);
      if (waiting?.bell !== bell) return;
      clearTimeout(waiting.timer);
      this.#claims.delete(key);
      bell.close();
    };
    this.#claims.set(key, { bell, timer: setTimeout(drop, CLAIM_TIMEOUT_MS) });
    bell.watchUnclaimed(drop);
  }

  /**
   * A channel received a DOORBELL naming `token`: `bind` gets the stream
   * that presents it, now or when it comes. Returns a function that
   * withdraws the claim (the channel closed first).
   */
  claim(token: Uint8Array, bind: (bell: Bell) => void): () => void {
    if (!this.#listener) return noop; // nobody can have rung us
    const key = tokenKey(token);
    const claim = this.#claims.get(key);
    if (claim?.bell) {
      clearTimeout(claim.timer);
      this.#claims.delete(key);
      claim.bell.claimed();
      bind(claim.bell);
      return noop;
    }
    if (claim) return noop; // claimed by another channel already: ignore
    this.#claims.set(key, { bind });
    return () => {
      if (this.#claims.get(key)?.bind === bind) this.#claims.delete(key);
    };
  }
}

function noop(): void {}

function closeConn(conn: ReactorStream): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** True if a socket file is at `path` and nothing accepts connections on it. */
function isStale(path: string): boolean {
  const lib = libc();
  const fd = lib.socket(LINUX.AF_UNIX, SOCK_STREAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const address = encodeSockaddrUn(encoder.encode(path), false);
    return lib.connect(fd, address.bytes, address.length) !== 0 &&
      readErrno() === ERRNO.ECONNREFUSED;
  } finally {
    closeQuietly(fd);
  }
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

/** This process's doorbell listener. */
export const bellTower: BellTower = new BellTower();

/** Counters for tests: how parked waits of channels were woken. */
export const doorbellStats = {
  /** Parked waits on a bound doorbell. */
  bellWaits: 0,
  /** Parked waits on the shared poll (no doorbell). */
  pollWaits: 0,
  /** Parked receives woken with nothing to receive (a stale or stranger's ring, a timeout race). */
  emptyWakes: 0,
};
