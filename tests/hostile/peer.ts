/**
 * Child processes for the hostile tests:
 *
 * - `burst NAME COUNT`: opens COUNT raw connections to NAME as fast as it
 *   can, prints `opened N`, then holds them until stdin says `close` (then
 *   closes them all, prints `closed`) or the process is killed.
 * - `flood NAME`: connects with the library and sends frames (one surface,
 *   pattern seed 1) back to back without waiting for anyone, printing
 *   `sent N` every 10 frames, until killed.
 * - `client NAME SEED [ALLOW_UID]`: connects with the library (admitting a
 *   listener of uid ALLOW_UID, default: same uid), prints `connected UID`,
 *   sends one 64x32 frame with pattern SEED, prints `sent`, then prints
 *   `got ok` (or `got PROBLEM`) for each frame sent back (checked against
 *   the pattern of its `meta.seed`) until the listener hangs up (prints
 *   `hung up ERROR`).
 * - `server NAME ALLOW_UID COUNT`: listens (admitting uid ALLOW_UID), prints
 *   `listening`, accepts one connection and receives COUNT messages,
 *   printing `frame WxH FORMAT` or `protocol:REASON` for each, then
 *   `fds BEFORE AFTER` (its descriptor count) and `done`.
 * - `fd-starved NAME`: listens, then opens `/dev/null` until the descriptor
 *   table is full and prints `full FDS`; accepts in a loop, printing
 *   `refused CALL ERRNAME` for each failure (backing off 10 ms), or `frame ok` when an accepted
 *   client's frame was read. Stdin `free` closes the filler (`freed FDS`).
 * - `whoami`: prints `uid N`.
 *
 * @module
 */

import { connect, listen, ProtocolError, Surface } from "../../mod.ts";
import { fillPattern, verifyPattern } from "../../examples/pattern.ts";
import { RawPeer } from "./raw.ts";
import { openProcFdDirectory } from "../../src/linux/libc.ts";
import { openPollerControlFd } from "../../src/linux/poller.ts";
import { libc } from "../../ffi/linux.ts";

const [mode, name, ...rest] = Deno.args;

/** How many descriptors this process has open (fcntl(F_GETFD) on each number). */
function countFds(): number {
  let count = 0;
  for (let fd = 0; fd < 4096; fd++) if (libc().fcntl(fd, 1, /* F_GETFD */ 0) >= 0) count++;
  return count;
}

async function stdinLines(onLine: (line: string) => boolean | void): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of Deno.stdin.readable) {
    buffer += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      if (onLine(line) === true) return;
    }
  }
}

switch (mode) {
  case "whoami":
    console.log(`uid ${libc().geteuid()}`);
    break;
  case "burst": {
    const count = Number(rest[0]);
    const peers: RawPeer[] = [];
    const failures = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      try {
        peers.push(RawPeer.connect(name));
      } catch (error) {
        const key = (error as Error).message;
        failures.set(key, (failures.get(key) ?? 0) + 1);
      }
    }
    console.log(`opened ${peers.length}`);
    for (const [message, n] of failures) console.log(`failed ${n}: ${message}`);
    await stdinLines((line) => line === "close");
    for (const peer of peers) peer.close();
    console.log("closed");
    break;
  }
  case "flood": {
    const channel = await connect(name, { timeout: 10000 });
    console.log("connected");
    using surface = Surface.create({ width: 64, height: 32 });
    fillPattern(surface, 1);
    for (let i = 1; i < Number.MAX_SAFE_INTEGER; i++) {
      await channel.send(surface, { seed: 1 });
      if (i % 10 === 0) console.log(`sent ${i}`);
    }
    break;
  }
  case "client": {
    const [seed, allowUid] = rest;
    const allowPeer = allowUid === undefined
      ? undefined
      : (peer: { uid: number }) => peer.uid === Number(allowUid);
    const channel = await connect(name, { timeout: 10000, allowPeer });
    console.log(`connected ${libc().geteuid()}`);
    using surface = Surface.create({ width: 64, height: 32 });
    fillPattern(surface, Number(seed));
    try {
      await channel.send(surface, { seed: Number(seed) });
      console.log("sent");
      for (;;) {
        // Frames sent back are checked against the pattern of their meta.seed.
        using frame = await channel.receive();
        const problem = verifyPattern(frame.surface, (frame.meta as { seed: number }).seed);
        console.log(`got ${problem ?? "ok"}`);
      }
    } catch (error) {
      console.log(`hung up ${(error as Error).name}`);
    }
    channel.close();
    break;
  }
  case "server": {
    const [allowUid, count] = rest;
    using listener = listen(name, { allowPeer: (peer) => peer.uid === Number(allowUid) });
    console.log("listening");
    using channel = await listener.accept({ timeout: 20000 });
    // Deno opens descriptors of its own shortly after start: count only after them.
    const age = performance.now();
    await new Promise((resolve) => setTimeout(resolve, Math.max(800 - age, 50)));
    // And surfaceport's two process-lifetime descriptors (see tests/helpers.ts).
    openProcFdDirectory();
    openPollerControlFd();
    const fdsBefore = countFds();
    for (let i = 0; i < Number(count); i++) {
      try {
        using frame = await channel.receive({ timeout: 20000 });
        const { width, height, format } = frame.surface;
        console.log(`frame ${width}x${height} ${format}`);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        console.log(`protocol:${error.reason}`);
      }
    }
    console.log(`fds ${fdsBefore} ${countFds()}`);
    console.log("done");
    break;
  }
  case "fd-starved": {
    using listener = listen(name);
    const filler: number[] = [];
    const devNull = new TextEncoder().encode("/dev/null\0");
    for (;;) {
      const fd = libc().open(devNull, 0o2000000, /* O_RDONLY | O_CLOEXEC */ 0);
      if (fd < 0) break;
      filler.push(fd);
    }
    console.log(`full ${filler.length}`);
    stdinLines((line) => {
      if (line !== "free") return;
      for (const fd of filler.splice(0)) libc().close(fd);
      console.log("freed");
      return true;
    });
    for (let served = 0; served < 1;) {
      try {
        using channel = await listener.accept({ timeout: 20000 });
        using _frame = await channel.receive({ timeout: 20000 });
        console.log("frame ok");
        served++;
      } catch (error) {
        // Out of descriptors: accept4 refused a client, or the wait found no eventfd. Back off.
        const e = error as { call?: string; errnoName?: string };
        if (!e.errnoName) throw error;
        console.log(`refused ${e.call} ${e.errnoName}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
