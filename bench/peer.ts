/**
 * The far side of every Deno benchmark, spawned by `bench/driver.ts` as its
 * own process (pinned with `taskset` when the run pins):
 *
 * - `peer.ts echo NAME SPIN SKIP`: connects to the surfaceport channel
 *   `NAME` (with `spinMicros: SPIN`) and, for each frame, writes the
 *   surface's last byte and sends the same surface back on the same channel,
 *   then closes its frame. When the driver hangs up it prints
 *   `{"allocated_per_frame":B}`: the bytes V8 allocated in this process per
 *   frame after the first SKIP frames.
 * - `peer.ts sink NAME SPIN`: the consumer of the pipelined run: for each
 *   frame, writes the last byte and closes the frame (which lets the
 *   producer's pool reuse the surface).
 * - `peer.ts control NAME 0 0 PARKING`: the park without the surface work (issue
 *   24): connects to NAME through the Linux backend itself and answers each
 *   16-byte control message with one, parking between them like any receive.
 * - `peer.ts copy PATH BYTES`: the copy baseline: listens on the Unix stream
 *   socket `PATH` with Deno's own `Deno.listen({ transport: "unix" })`, reads
 *   frames of `BYTES` bytes into one buffer, writes the last byte and answers
 *   each with one byte.
 *
 * Prints `ready` on stdout once it can take frames; exits when the driver
 * closes the connection.
 *
 * @module
 */

import { connect, PeerClosedError } from "../mod.ts";
import { setDoorbellEnabled } from "../src/linux/doorbell.ts";
import { setPollThreadEnabled } from "../src/linux/poller.ts";
import { allocatedBytes, CONTROL_LIMITS, CONTROL_MESSAGE } from "./common.ts";
import { linuxBackend } from "../src/linux/backend.ts";

const [mode, target, arg, arg2, parking] = Deno.args;
// "bell": with the doorbell (off by default); "poll": the shared poll only (the default), on its
// thread; "call": the shared poll as nonblocking calls (what it was before the thread).
setDoorbellEnabled(parking === "bell");
setPollThreadEnabled(parking !== "call");

async function echo(name: string, spinMicros: number, warmup: number): Promise<void> {
  const channel = await connect(name, { timeout: 10_000, spinMicros });
  console.log("ready");
  let frames = 0, allocatedAtWarmup = 0;
  try {
    for (;;) {
      const frame = await channel.receive();
      if (frames++ === warmup) allocatedAtWarmup = allocatedBytes();
      const bytes = frame.surface.bytes();
      bytes[bytes.length - 1]++;
      await channel.send(frame.surface, undefined, { timeout: 10_000 });
      frame.close();
    }
  } catch (error) {
    if (!(error instanceof PeerClosedError)) throw error;
  } finally {
    channel.close();
  }
  const measured = frames - warmup - 1;
  console.log(JSON.stringify({
    allocated_per_frame: measured > 0 ? (allocatedBytes() - allocatedAtWarmup) / measured : null,
  }));
}

async function sink(name: string, spinMicros: number): Promise<void> {
  const channel = await connect(name, { timeout: 10_000, spinMicros });
  console.log("ready");
  try {
    for await (const frame of channel) {
      const bytes = frame.surface.bytes();
      bytes[bytes.length - 1]++;
      frame.close();
    }
  } finally {
    channel.close();
  }
}

async function readFully(conn: Deno.Conn, buffer: Uint8Array): Promise<boolean> {
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) return false;
    filled += n;
  }
  return true;
}

async function copy(path: string, frameBytes: number): Promise<void> {
  const listener = Deno.listen({ transport: "unix", path });
  console.log("ready");
  const conn = await listener.accept();
  listener.close();
  const frame = new Uint8Array(frameBytes);
  const ack = new Uint8Array(1);
  try {
    while (await readFully(conn, frame)) {
      frame[frame.length - 1]++;
      ack[0] = frame[frame.length - 1];
      await conn.write(ack);
    }
  } finally {
    conn.close();
  }
}

async function control(name: string): Promise<void> {
  const connection = await linuxBackend.connect(
    name,
    () => true,
    CONTROL_LIMITS,
    performance.now() + 10_000,
  );
  console.log("ready");
  try {
    for (;;) {
      await connection.receiveControl(performance.now() + 10_000);
      await connection.sendControl(CONTROL_MESSAGE, performance.now() + 10_000);
    }
  } catch (error) {
    if (!(error instanceof PeerClosedError)) throw error;
  } finally {
    connection.close();
  }
}

switch (mode) {
  case "echo":
    await echo(target, Number(arg), Number(arg2 ?? 0));
    break;
  case "sink":
    await sink(target, Number(arg));
    break;
  case "control":
    await control(target);
    break;
  case "copy":
    await copy(target, Number(arg));
    break;
  default:
    console.error(`peer.ts: unknown mode ${mode}`);
    Deno.exit(2);
}
