/**
 * In-process micro benchmarks for `deno task microbench` (`deno bench`):
 * the per-call costs behind the cross-process numbers of `bench/run.ts`.
 *
 * @module
 */

import { connect, listen, Surface, SurfacePool } from "../mod.ts";

const FHD = { width: 1920, height: 1080 } as const;

Deno.bench("Surface.create + close, 1920x1080 BGRA", { group: "surface" }, () => {
  const surface = Surface.create(FHD);
  surface.close();
});

Deno.bench("Surface.bytes() of a new surface, 1920x1080 BGRA", { group: "surface" }, (b) => {
  const surface = Surface.create(FHD);
  b.start();
  surface.bytes();
  b.end();
  surface.close();
});

const pool = new SurfacePool({ ...FHD, maxSurfaces: 2 });
pool.tryAcquire()?.close(); // warm: one surface allocated

Deno.bench("SurfacePool acquire + close, warm pool, 1920x1080", { group: "pool" }, async () => {
  const surface = await pool.acquire({ timeout: 1000 });
  surface.close();
});

Deno.bench("SurfacePool tryAcquire + close, warm pool, 1920x1080", { group: "pool" }, () => {
  pool.tryAcquire()!.close();
});

const name = `microbench-${Deno.pid}`;
const listener = listen(name);
const accepted = listener.accept({ timeout: 5000 });
const producer = await connect(name, { timeout: 5000 });
const consumer = await accepted;
listener.close();
const surface = Surface.create(FHD);

Deno.bench("send + receive + close, one process, 1920x1080", { group: "channel" }, async () => {
  await producer.send(surface);
  const frame = await consumer.receive({ timeout: 1000 });
  frame.close();
});

Deno.bench("send + receive + bytes() + close, one process", { group: "channel" }, async () => {
  await producer.send(surface);
  const frame = await consumer.receive({ timeout: 1000 });
  frame.surface.bytes()[0]++;
  frame.close();
});

globalThis.addEventListener("unload", () => {
  surface.close();
  producer.close();
  consumer.close();
  pool.close();
});
