/**
 * A parked receive against the smallest wake-up the runtime itself can do
 * (issue 20): what Deno allocates to wake a JavaScript wait is not the
 * library's, and it bounds from below what a parked receive can cost. Each
 * figure is sampled as in `allocation_test.ts` (`sampled_allocation.ts`):
 *
 * - the runtime's bare nonblocking FFI call, awaited: `poll` with no
 *   descriptors, which returns at once on a worker thread (the shared
 *   poll's own call, with nothing around it);
 * - a bare `read` of a Unix socket Deno owns, parked in Deno's reactor until
 *   this process writes a byte to the other end (less what the write alone
 *   costs): what a wait on the doorbell costs at least;
 * - a subscription's receive + close parked on its doorbell, woken by a
 *   publisher in another process that rings it
 *   (`peers/paced_publisher.ts`).
 *
 * A subscription's receive parked on the shared poll is in
 * `pubsub_allocation_test.ts`. Measured figures: docs/benchmarks.md, issue
 * 20.
 *
 * @module
 */

import assert from "node:assert/strict";
import { subscribe } from "../mod.ts";
import { doorbellStats } from "../src/linux/doorbell.ts";
import { Child, PEER_FLAGS, uniqueName } from "./helpers.ts";
import { assertBelow, nonblockingCallFloor, perOperation } from "./sampled_allocation.ts";

const linux = Deno.build.os === "linux";

function hasPython(): boolean {
  try {
    return new Deno.Command("python3", { args: ["-c", ""] }).outputSync().success;
  } catch {
    return false;
  }
}

const python = linux && hasPython();
if (linux && !python) console.warn("wake-up allocation test skipped: no python3 on PATH");

/**
 * A receive parked on the doorbell, and the frame's close, beyond the bare
 * parked read of a Deno socket measured beside it (~1.2 KB: what Deno's
 * reactor allocates to wake a `read`, its op's promise and bookkeeping).
 * Measured 0.84-0.87 KB above it (2.04 KB in all): the frame as a waiting
 * receive costs it (~0.24 KB), the subscription's promise and its
 * resolvers (~0.2 KB), and a `then` each where the bell's read and the
 * connection's park are chained. With the subscription's `then` on a
 * promise of the connection's: 1.00-1.01 KB above it; with the bell's read
 * an async function too: ~1.3 KB; on main at f2c7f90: 1.63 KB.
 */
const LIMIT_DOORBELL_ABOVE_READ = 930;
const PACED_PUBLISHER = new URL("./peers/paced_publisher.ts", import.meta.url).pathname;

/** A writer in another process: a byte every ~0.1 ms to the socket at argv[1], until it breaks. */
const WRITER = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    while True:
        s.send(b"x")
        time.sleep(0.0001)
except OSError:
    pass
`;

Deno.test({
  name: "wake-up allocation: the runtime's bare async wake-ups (a nonblocking FFI call, a " +
    "parked socket read), and a subscription's receive parked on its doorbell",
  ignore: !python,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // 1. The bare nonblocking FFI call.
    const ffi = await nonblockingCallFloor(30_000, 20_000);
    console.log(
      `  the runtime's nonblocking FFI call (poll of nothing), awaited: ` +
        `${ffi.bytes.toFixed(0)} B per call\n${ffi.profile.describe(ffi.count, 6)}`,
    );

    let readFloor: number;
    // 2. A bare read of a Deno-owned socket, parked until a byte comes from another process (a
    // writer in this one would count its own write).
    const path = `/tmp/sp-wake-${Deno.pid}-${uniqueName("r")}.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    const writer = new Deno.Command("python3", {
      args: ["-c", WRITER, path],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let server: Deno.UnixConn | undefined;
    try {
      server = await listener.accept();
      const conn = server;
      const one = new Uint8Array(1);
      let bytes = 0;
      const read = await perOperation(
        async (count) => {
          for (let i = 0; i < count; i++) bytes += (await conn.read(one)) ?? 0;
        },
        5_000,
        10_000,
      );
      if (bytes !== 15_000) throw new Error(`read ${bytes} bytes, not 15000`);
      readFloor = read.bytes;
      console.log(
        `  a read of a Deno-owned socket, parked until a byte comes: ${read.bytes.toFixed(0)} B ` +
          `per read\n${read.profile.describe(read.count, 6)}`,
      );
    } finally {
      server?.close();
      listener.close();
      try {
        writer.kill("SIGKILL");
      } catch {
        // (gone already)
      }
      await writer.status;
      await Deno.remove(path).catch(() => {});
    }

    // 3. A subscription's receive parked on its doorbell.
    const name = uniqueName("wake");
    await using peer = new Child(Deno.execPath(), [
      "run",
      ...PEER_FLAGS,
      "--allow-net",
      PACED_PUBLISHER,
      name,
    ]);
    await peer.line("publishing");
    using subscription = await subscribe(name, { policy: "queue", timeout: 10_000 });
    const bellWaits = doorbellStats.bellWaits;
    const parked = await perOperation(
      async (count) => {
        for (let i = 0; i < count; i++) (await subscription.receive()).close();
      },
      10_000,
      10_000,
    );
    const perFrame = (doorbellStats.bellWaits - bellWaits) / 20_000;
    console.log(
      `  a subscription's receive + close parked on its doorbell: ${parked.bytes.toFixed(0)} B ` +
        `per frame (${(perFrame * 100).toFixed(0)}% of them parked on it), ` +
        `${(parked.bytes - readFloor).toFixed(0)} B beyond the bare read\n` +
        parked.profile.describe(parked.count, 12),
    );
    assert(
      perFrame > 0.9,
      `only ${(perFrame * 100).toFixed(0)}% of the receives parked on the bell`,
    );
    assertBelow(
      "a receive parked on the doorbell, beyond a bare parked read",
      parked,
      LIMIT_DOORBELL_ABOVE_READ,
      readFloor,
    );
  },
});
