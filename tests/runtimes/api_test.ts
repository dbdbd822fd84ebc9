/**
 * The public API on every runtime: written against `node:test` and
 * `node:assert/strict` only, so `deno test` runs it here (as part of
 * `tests/`), and `tests/runtimes_test.ts` runs it under `node --test` and
 * `bun test` and fails if any test fails there.
 *
 * @module
 */

import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import {
  ClosedError,
  connect,
  GstSinkBridge,
  GstSourceBridge,
  list,
  listen,
  PeerClosedError,
  PoolExhaustedError,
  publish,
  subscribe,
  Surface,
  SurfacePool,
  SystemCallError,
  TimeoutError,
  toRGBA,
} from "../../mod.ts";
import { runtime } from "../../ffi/runtime.ts";
import { libc } from "../../ffi/linux.ts";

let counter = 0;
const uniqueName = (what: string) => `rt-${what}-${process.pid}-${counter++}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A byte pattern that differs per frame and per position. */
function paint(bytes: Uint8Array, seed: number): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + seed * 13) & 0xff;
}

/** The first position where `bytes` differs from {@link paint}'s pattern, or -1. */
function firstWrong(bytes: Uint8Array, seed: number): number {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== ((i * 7 + seed * 13) & 0xff)) return i;
  return -1;
}

async function channelPair() {
  const name = uniqueName("pair");
  const listener = listen(name);
  const accepted = listener.accept({ timeout: 5000 });
  const producer = await connect(name, { timeout: 5000 });
  const consumer = await accepted;
  return {
    listener,
    producer,
    consumer,
    close() {
      producer.close();
      consumer.close();
      listener.close();
    },
  };
}

test(`${runtime.name}: the runtime seam reports this host`, () => {
  assert.ok(["deno", "node", "bun"].includes(runtime.name));
  assert.equal(runtime.pid, process.pid);
  assert.equal(runtime.os, process.platform);
});

test(`${runtime.name}: runtime.addressOf of a small fresh typed array stays its address`, () => {
  // A C struct keeps the address (a msghdr's iovec): it must not move when `.buffer` is first
  // touched (on Bun a small typed array's bytes leave its heap cell then).
  for (const size of [8, 16, 64]) {
    const bytes = new Uint8Array(size);
    const before = runtime.addressOf(bytes);
    const view = new DataView(bytes.buffer);
    view.setUint8(0, 0x7f);
    assert.equal(runtime.addressOf(bytes), before, `${size} bytes`);
    assert.equal(
      new Uint8Array(runtime.arrayBufferAt(runtime.pointerFrom(before)!, size))[0],
      0x7f,
    );
  }
});

test(`${runtime.name}: Surface.create gives zero-copy planes; close detaches every view`, () => {
  const surface = Surface.create({ width: 64, height: 32, format: "NV12" });
  assert.equal(surface.format, "420v");
  assert.equal(surface.planes.length, 2);
  const luma = surface.bytes(0);
  assert.equal(luma.length, surface.planes[0].bytesPerRow * 32);
  luma.fill(0x42);
  assert.equal(surface.bytes(0)[0], 0x42, "two views over the same memory");
  assert.equal(surface.inUse, false);
  surface.close();
  assert.equal(luma.length, 0, "a view of a closed surface is detached");
  surface.close(); // idempotent
  assert.throws(() => Surface.create({ width: 0, height: 1 }));
});

test(`${runtime.name}: send and receive carry the same memory, meta and sequence; a parked receive wakes`, async () => {
  const pair = await channelPair();
  const surface = Surface.create({ width: 128, height: 64 });
  try {
    paint(surface.bytes(), 1);
    await pair.producer.send(surface, { pts: 1 });
    const frame = await pair.consumer.receive({ timeout: 2000 });
    assert.equal(frame.surface.id, surface.id);
    assert.deepEqual(frame.meta, { pts: 1 });
    assert.equal(firstWrong(frame.surface.bytes(), 1), -1);
    frame.surface.bytes()[0] = 0x99; // the consumer writes into the producer's memory
    assert.equal(surface.bytes()[0], 0x99);
    assert.equal(surface.inUse, true, "the consumer's frame counts as a use");
    frame.close();
    assert.equal(surface.inUse, false);

    // Nothing queued: the receive parks off the main thread while timers keep running.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const parked = pair.consumer.receive({ timeout: 5000 });
    await sleep(100);
    paint(surface.bytes(), 2);
    await pair.producer.send(surface, new Uint8Array([1, 2, 3]));
    const second = await parked;
    clearInterval(timer);
    assert.ok(ticks >= 5, `the event loop ran while the receive was parked (${ticks} ticks)`);
    assert.deepEqual([...(second.meta as Uint8Array)], [1, 2, 3]);
    assert.equal(firstWrong(second.surface.bytes(), 2), -1);
    second.close();
  } finally {
    surface.close();
    pair.close();
  }
});

test(`${runtime.name}: receive times out with TimeoutError; a closed peer is PeerClosedError`, async () => {
  const pair = await channelPair();
  try {
    await assert.rejects(pair.consumer.receive({ timeout: 50 }), TimeoutError);
    const controller = new AbortController();
    const aborted = pair.consumer.receive({ signal: controller.signal });
    controller.abort(new Error("stop"));
    await assert.rejects(aborted, /stop/);
    pair.producer.close();
    await assert.rejects(pair.consumer.receive({ timeout: 2000 }), PeerClosedError);
  } finally {
    pair.close();
  }
});

test(`${runtime.name}: SurfacePool never hands out a surface a consumer still holds`, async () => {
  const pair = await channelPair();
  const pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 1 });
  try {
    const first = await pool.acquire({ timeout: 1000 });
    const id = first.id;
    await pair.producer.send(first);
    first.close();
    const held = await pair.consumer.receive({ timeout: 2000 });
    await assert.rejects(pool.acquire({ timeout: 100 }), PoolExhaustedError);
    const waiting = pool.acquire({ timeout: 5000 });
    await sleep(20);
    held.close();
    const again = await waiting;
    assert.equal(again.id, id, "the one surface, once the consumer let go");
    again.close();
  } finally {
    pool.close();
    pair.close();
  }
});

test(`${runtime.name}: typed errors: a taken name, nothing listening, a bad surface`, async () => {
  const name = uniqueName("taken");
  const listener = listen(name);
  try {
    assert.throws(
      () => listen(name),
      (e: unknown) => e instanceof SystemCallError && e.errnoName === "EADDRINUSE",
    );
  } finally {
    listener.close();
  }
  await assert.rejects(connect(uniqueName("nobody"), { timeout: 100 }), TimeoutError);
  assert.throws(
    () => Surface.create({ width: 1, height: 1, format: "XXXX" as "BGRA" }),
  );
  const surface = Surface.create({ width: 2, height: 2 });
  surface.close();
  assert.throws(() => surface.bytes(), ClosedError);
});

test(`${runtime.name}: publish / subscribe deliver every frame to every subscriber, and list() shows the publisher`, async () => {
  const name = uniqueName("pub");
  const publisher = publish(name);
  const surface = Surface.create({ width: 64, height: 16 });
  const subscriptions = [
    await subscribe(name, { timeout: 5000 }),
    await subscribe(name, { timeout: 5000 }),
  ];
  try {
    const deadline = Date.now() + 5000;
    while (publisher.subscribers.length < 2 && Date.now() < deadline) await sleep(10);
    assert.equal(publisher.subscribers.length, 2);
    const entries = await list();
    assert.ok(
      entries.some((e) => e.name === name && e.kind === "publisher" && e.pid === process.pid),
      `list() shows ${name}: ${JSON.stringify(entries)}`,
    );
    for (let i = 0; i < 3; i++) {
      paint(surface.bytes(), 10 + i);
      const sent = publisher.send(surface, { i });
      const frames = await Promise.all(subscriptions.map((s) => s.receive({ timeout: 2000 })));
      for (const frame of frames) {
        assert.deepEqual(frame.meta, { i });
        assert.equal(firstWrong(frame.surface.bytes(), 10 + i), -1);
        frame.close();
      }
      await sent;
    }
  } finally {
    for (const s of subscriptions) s.close();
    surface.close();
    publisher.close();
  }
  assert.ok(!(await list()).some((e) => e.name === name), "closed: gone from list()");
});

test(`${runtime.name}: toRGBA converts NV12 and BGRA`, () => {
  const bgra = Surface.create({ width: 4, height: 2, format: "BGRA" });
  const nv12 = Surface.create({ width: 4, height: 2, format: "NV12" });
  try {
    bgra.bytes().set([10, 20, 30, 255]);
    const rgba = toRGBA(bgra);
    assert.deepEqual([...rgba.subarray(0, 4)], [30, 20, 10, 255]);
    nv12.bytes(0).fill(235);
    nv12.bytes(1).fill(128);
    const white = toRGBA(nv12, { matrix: "bt709" });
    assert.deepEqual([...white.subarray(0, 4)], [255, 255, 255, 255]);
  } finally {
    bgra.close();
    nv12.close();
  }
});

test(`${runtime.name}: the GStreamer bridges carry a received frame to-gst → from-gst without a copy, and release it`, async () => {
  const socket = `@${uniqueName("gst")}`;
  const sink = GstSinkBridge.listen(socket);
  const pair = await channelPair();
  const surface = Surface.create({ width: 64, height: 4, format: "BGRA" });
  let source: GstSourceBridge | undefined;
  try {
    source = await GstSourceBridge.connect(socket, { timeout: 5000 });
    await sink.waitForClient(5000);
    const received: number[] = [];
    const running = source.run({
      send(adopted) {
        // The bridge owns `adopted` (a sink forwards it, as channel.send does): with no other
        // holder, it gives GStreamer's buffer back, and to-gst then releases the frame.
        received.push(firstWrong(adopted.bytes(), 5));
        return Promise.resolve();
      },
    });
    paint(surface.bytes(), 5);
    await pair.producer.send(surface);
    await sink.send(await pair.consumer.receive({ timeout: 2000 }));
    const deadline = Date.now() + 5000;
    while (surface.inUse && Date.now() < deadline) await sleep(10);
    assert.equal(surface.inUse, false, "released by both bridges");
    await sink.endOfStream();
    await running;
    assert.deepEqual(received, [-1], "one frame, every byte as sent");
  } finally {
    source?.close();
    sink.close();
    surface.close();
    pair.close();
  }
});

test(`${runtime.name}: 100,000 waits off the main thread in a row each get their own result`, async () => {
  // A wake-up meant for one call that lands while the next is waiting must not end that one
  // (Node's Atomics-based hop did, about once in 30,000 calls, before it re-checked).
  const lib = libc();
  const fd = lib.eventfd(1, 0x80000 /* EFD_CLOEXEC */);
  const fds = runtime.sharedBytes(8);
  new DataView(fds.buffer).setInt32(0, fd, true);
  new DataView(fds.buffer).setInt16(4, 1, /* POLLIN */ true);
  try {
    for (let i = 0; i < 100_000; i++) {
      const ready = await lib.poll_wait(fds, 1n, 0);
      if (ready !== 1) assert.fail(`wait ${i}: poll returned ${ready}`);
    }
  } finally {
    lib.close(fd);
  }
});

test(`${runtime.name}: a wait off the main thread refuses a buffer it could not share`, async () => {
  const lib = libc();
  const fd = lib.eventfd(1, 0x80000 /* EFD_CLOEXEC */);
  const fds = new Uint8Array(8); // not runtime.sharedBytes
  new DataView(fds.buffer).setInt32(0, fd, true);
  new DataView(fds.buffer).setInt16(4, 1, /* POLLIN */ true);
  try {
    if (runtime.name === "deno") {
      // Deno's nonblocking call reads and writes the caller's own buffer: nothing to refuse.
      assert.equal(await lib.poll_wait(fds, 1n, 0), 1);
    } else {
      // A worker would poll a copy: the revents it wrote would never reach this buffer.
      await assert.rejects(lib.poll_wait(fds, 1n, 0), TypeError);
    }
  } finally {
    lib.close(fd);
  }
});
