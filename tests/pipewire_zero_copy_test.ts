/**
 * from-pipewire without a copy, against a real PipeWire 1.4 daemon: a native
 * producer (tests/fixtures/pipewire_memfd_producer.ts, run in the chroot by
 * a Deno binary placed there: the chroot's libpipewire needs its glibc)
 * allocates its buffers as memfds, as screen capture and cameras do. The
 * subscriber must map the very memfd the producer painted (same inode:
 * zero copies), and a PipeWire buffer must go back to its producer only
 * once the surfaceport subscriber holding it let go.
 *
 * @module
 */

import assert from "node:assert/strict";
import { subscribe, type Surface } from "../mod.ts";
import { fstatx } from "../src/linux/libc.ts";
import { GST, within } from "./gst_helpers.ts";
import { Child, processTempDir } from "./helpers.ts";
import {
  checkFrame,
  cli,
  H,
  reason,
  RUNTIME,
  skip,
  startPipeWire,
  stop,
  W,
} from "./pipewire_helpers.ts";

const FIXTURE = new URL("./fixtures/pipewire_memfd_producer.ts", import.meta.url).pathname;
/** Where the Deno binary and the fixture go inside the chroot. */
const IN_CHROOT = `/tmp/sp-deno-${Deno.pid}`;

/** Places this Deno binary (hard link, else copy) and the fixture in the chroot. */
async function placeDeno(): Promise<void> {
  const dir = `${GST.root}${IN_CHROOT}`;
  await Deno.mkdir(`${dir}/cache`, { recursive: true });
  await Deno.link(Deno.execPath(), `${dir}/deno`).catch(() =>
    Deno.copyFile(Deno.execPath(), `${dir}/deno`)
  );
  await Deno.copyFile(FIXTURE, `${dir}/producer.ts`);
}

globalThis.addEventListener("unload", () => {
  if (GST.root) Deno.removeSync(`${GST.root}${IN_CHROOT}`, { recursive: true });
});

/** The memfd producer as PipeWire node `node`, in the chroot. */
function startProducer(node: string): Child {
  return new Child("chroot", [
    GST.root!,
    ...["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp"],
    `XDG_RUNTIME_DIR=${RUNTIME}`,
    `DENO_DIR=${IN_CHROOT}/cache`,
    ...[`${IN_CHROOT}/deno`, "run", "--allow-ffi", `${IN_CHROOT}/producer.ts`],
    ...[node, String(W), String(H)],
  ]);
}

/** The inode of the memfd under an open surface. */
function inodeOf(surface: Surface): number {
  const handle = surface.unsafeHandle;
  assert.equal(handle.kind, "memfd");
  return Number(fstatx(handle.kind === "memfd" ? handle.fd : -1).ino);
}

Deno.test({
  name:
    `${skip}from-pipewire passes a producer's memfds on without a copy (the subscriber maps the producer's inode), and gives each buffer back to PipeWire only once its subscriber let go`,
  ignore: !!reason,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using daemon = await startPipeWire();
    void daemon;
    await placeDeno();
    const dir = await processTempDir("sp-pw-");
    const node = `sp-memfd-${Deno.pid}`;
    const producer = startProducer(node);
    let fromPw: Child | undefined;
    try {
      await producer.line(`providing ${node}`, 20000);
      fromPw = cli(["from-pipewire", node, `${dir}/out.sock`, "--interval", "200"]);
      using frames = await subscribe(`${dir}/out.sock`, { timeout: 20000 });
      // The producer's memfds, as it allocated them (one line each, once linked).
      const inodes = new Set<number>();
      {
        using first = await within(frames.receive(), 30000, "a first frame from from-pipewire");
        void first;
      }
      for (;;) {
        const line = await producer.line(/^buffer \d+ inode \d+$/, 100).catch(() => undefined);
        if (!line) break;
        inodes.add(Number(line.split(" ")[3]));
      }
      assert.ok(inodes.size >= 2, `the producer allocated ${inodes.size} memfds`);
      // Every frame: the producer's own memfd (no copy anywhere), every pixel as painted.
      for (let i = 0; i < 5; i++) {
        using frame = await within(frames.receive(), 10000, "a frame");
        assert.equal(frame.surface.format, "BGRA");
        const inode = inodeOf(frame.surface);
        assert.ok(inodes.has(inode), `frame in inode ${inode}, not one of the producer's`);
        checkFrame(frame.surface.bytes(), frame.surface.planes[0].bytesPerRow, "BGRA");
      }
      const counters = await fromPw.line(/copies 0 \(direct\)/, 5000);
      console.log(counters.trim());

      // Use tracking: while the subscriber holds a frame, its memfd never goes back to the
      // producer; the others keep cycling (frames keep coming). Once it lets go, it does.
      const held = await within(frames.receive(), 10000, "the frame to hold");
      const heldInode = inodeOf(held.surface);
      // Skip the producer's lines up to the one that sent this frame: earlier "returned" lines
      // of this memfd were about its earlier frames.
      const number = held.surface.bytes()[1]; // painted frame number, mod 256
      for (;;) {
        const line = await producer.line(new RegExp(`^queued ${heldInode} \\d+ `), 5000);
        if ((Number(line.split(" ")[2]) & 255) === number) break;
      }
      const returnedWhileHeld: string[] = [];
      const otherReturns = new Set<number>();
      const end = performance.now() + 1500;
      while (performance.now() < end) {
        using frame = await within(frames.receive(), 5000, "frames beside the held one");
        void frame;
        for (;;) {
          const line = await producer.line(/^returned \d+$/, 1).catch(() => undefined);
          if (!line) break;
          const inode = Number(line.split(" ")[1]);
          if (inode === heldInode) returnedWhileHeld.push(line);
          else otherReturns.add(inode);
        }
      }
      assert.deepEqual(returnedWhileHeld, [], "a held frame's buffer went back to the producer");
      assert.ok(otherReturns.size >= 1, "the other buffers did not cycle meanwhile");
      held.close();
      // The whole line: a string would match a longer inode number that starts with this one.
      const back = await producer.line(new RegExp(`^returned ${heldInode}$`), 5000).catch(() =>
        undefined
      );
      assert.ok(back, `the held buffer (inode ${heldInode}) never came back after its release`);
    } finally {
      if (fromPw) await stop(fromPw);
      await stop(producer);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
