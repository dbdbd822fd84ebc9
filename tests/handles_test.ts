/**
 * What handles say about themselves (Deno.customInspect), the unsafe native
 * handle and its ownership rules, and how a pool names who holds its
 * surfaces when acquire() cannot get one.
 */
import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { PoolExhaustedError, Surface, SurfacePool } from "../mod.ts";
import { Child, pair, PEER_FLAGS, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";
import { listen } from "../mod.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "inspect: Surface, Frame, Channel, Listener and SurfacePool print what they are",
  ignore: !linux,
  async fn() {
    using channels = await pair();
    using pool = new SurfacePool({ width: 64, height: 32, format: "NV12", maxSurfaces: 3 });
    using surface = await pool.acquire();
    await channels.client.send(surface, { pts: 7 });
    using frame = await channels.server.receive({ timeout: 5000 });
    const show = (value: unknown) => Deno.inspect(value, { colors: false, depth: 4 });

    assert.match(
      show(channels.listener),
      /^Listener \{ address: "@surfaceport\/pair-.*", closed: false \}$/,
    );
    assert.match(
      show(channels.client),
      new RegExp(
        `^Channel \\{ peer: \\{ pid: ${Deno.pid}, uid: \\d+, gid: \\d+ \\}, sent: 1, closed: false \\}$`,
      ),
    );
    const pooled = show(surface);
    assert.match(pooled, /^Surface \{/);
    for (
      const part of [
        'format: "420v"',
        'size: "64x32"',
        `id: ${surface.id}`,
        'from: "pool"',
        "closed: false",
        "inUse: true",
      ]
    ) {
      assert.ok(pooled.includes(part), `${part} in ${pooled}`);
    }
    const shown = show(frame);
    for (
      const part of [
        "Frame {",
        "sequence: 0",
        "meta: { pts: 7 }",
        'from: "received"',
        "ageMicros: ",
      ]
    ) {
      assert.ok(shown.includes(part), `${part} in ${shown}`);
    }
    const poolShown = show(pool);
    for (
      const part of [
        "SurfacePool {",
        'format: "420v"',
        "maxSurfaces: 3",
        "inUseHere: 1",
        `ids: [ ${surface.id} ]`,
      ]
    ) {
      assert.ok(poolShown.includes(part), `${part} in ${poolShown}`);
    }
    frame.close();
    assert.match(show(frame), /closed: true/);
    const created = Surface.create({ width: 2, height: 2 });
    created.close();
    const closedShown = show(created);
    for (
      const part of [
        "Surface {",
        'format: "BGRA"',
        'size: "2x2"',
        'from: "Surface.create"',
        "closed: true",
      ]
    ) {
      assert.ok(closedShown.includes(part), `${part} in ${closedShown}`);
    }
    assert.ok(!closedShown.includes("inUse"), "a closed surface asks the kernel nothing");
  },
});

Deno.test({
  name: "unsafeHandle: the memfd itself; a dup of a received one keeps the sender's surface in use",
  ignore: !linux,
  async fn() {
    using channels = await pair();
    using surface = Surface.create({ width: 16, height: 16, format: "L008" });
    const handle = surface.unsafeHandle;
    assert.equal(handle.kind, "memfd");
    const fd = (handle as { fd: number }).fd;
    // A memfd sealed against resizing (F_GET_SEALS = 1034; F_SEAL_SHRINK | F_SEAL_GROW = 6).
    assert.equal(libc().fcntl(fd, 1034, 0) & 6, 6);
    await channels.client.send(surface);
    const frame = await channels.server.receive({ timeout: 5000 });
    const received = frame.surface.unsafeHandle as { kind: string; fd: number };
    assert.equal(received.kind, "memfd");
    assert.notEqual(received.fd, fd);
    assert.equal(libc().fcntl(received.fd, 1034, 0) & 6, 6);
    // An owned copy, as the documentation says: dup shares the descriptor's lock.
    const copy = libc().dup(received.fd);
    assert.ok(copy >= 0);
    frame.close();
    assert.throws(() => frame.surface.unsafeHandle, /closed/);
    assert.equal(surface.inUse, true, "the dup still holds the received surface");
    libc().close(copy);
    assert.equal(surface.inUse, false, "closing the copy lets it go");
  },
});

Deno.test({
  name: "PoolExhaustedError: names surfaces not closed here and frames open in this process",
  ignore: !linux,
  async fn() {
    using channels = await pair();
    using pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 2 });
    const a = await pool.acquire();
    const b = await pool.acquire();
    await assert.rejects(() => pool.acquire({ timeout: 30 }), (error: Error) => {
      assert.ok(error instanceof PoolExhaustedError);
      assert.match(error.message, /2 handed out by acquire\(\) in this process and not closed yet/);
      assert.match(error.message, new RegExp(`ids ${a.id}, ${b.id}`));
      assert.doesNotMatch(error.message, /other processes/);
      return true;
    });
    await channels.client.send(a);
    a.close();
    const frame = await channels.server.receive({ timeout: 5000 });
    await assert.rejects(() => pool.acquire({ timeout: 30 }), (error: Error) => {
      assert.match(error.message, /1 handed out by acquire\(\) in this process/);
      assert.match(error.message, /1 held by frames received in this process and not closed/);
      assert.doesNotMatch(error.message, /other processes/);
      return true;
    });
    frame.close();
    b.close();
  },
});

Deno.test({
  name: "PoolExhaustedError: names surfaces held by another process",
  ignore: !linux,
  async fn() {
    const name = uniqueName("hold");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["hold", name]);
    using channel = await listener.accept({ timeout: 10000 });
    await peer.line("connected");
    using pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 1 });
    {
      using surface = await pool.acquire();
      await channel.send(surface, { seed: 0 });
    }
    await peer.line(/^got 0/);
    await assert.rejects(() => pool.acquire({ timeout: 30 }), (error: Error) => {
      assert.match(error.message, /1 sent and still held by other processes/);
      assert.doesNotMatch(error.message, /in this process/);
      return true;
    });
  },
});

Deno.test({
  name: "acquire() without a timeout warns once who holds the surfaces, and keeps waiting",
  ignore: !linux,
  async fn() {
    using pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 1 });
    const held = await pool.acquire();
    const warnings: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.join(" "));
    try {
      const waiting = pool.acquire({ warnAfter: 100 });
      await waitUntil(() => warnings.length > 0, 10000, "the stall warning");
      await new Promise((resolve) => setTimeout(resolve, 300)); // still waiting: no second one
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(warnings[0], /acquire\(\) has waited \d+ ms and keeps waiting/);
      assert.match(warnings[0], /1 handed out by acquire\(\) in this process and not closed yet/);
      held.close();
      (await waiting).close();
    } finally {
      console.warn = original;
    }
    await assert.rejects(() => pool.acquire({ warnAfter: -1 }), RangeError);
  },
});

Deno.test({
  name: "a frame garbage-collected without close() warns once and gives the surface back",
  ignore: !linux,
  async fn() {
    const script = new URL("./peers/drop_frame.ts", import.meta.url).pathname;
    await using child = new Child(Deno.execPath(), [
      "run",
      ...PEER_FLAGS,
      "--v8-flags=--expose-gc",
      script,
      uniqueName("drop"),
    ]);
    await child.line("reacquired", 30000);
    const status = await child.exit();
    assert.equal(status.code, 0, child.stderr);
    const warnings = child.stderr.split("\n").filter((line) => line.includes("garbage-collected"));
    assert.equal(warnings.length, 1, child.stderr);
    assert.match(
      warnings[0],
      /a received Frame \(BGRA 64x64, id \d+\) was garbage-collected without close\(\)/,
    );
  },
});

Deno.test({
  name: "without --allow-ffi the first call says the permission is missing",
  ignore: !linux,
  async fn() {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", new URL("./peers/no_ffi.ts", import.meta.url).pathname],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.notEqual(code, 0);
    assert.match(
      new TextDecoder().decode(stderr),
      /LibraryLoadError: could not open libc\.so\.6: the --allow-ffi permission is missing/,
    );
  },
});
