import assert from "node:assert/strict";
import { type Channel, listen, type PixelFormat, Surface } from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { Child, uniqueName } from "./helpers.ts";
import { bellTower } from "../src/linux/bell_tower.ts";
import { doorbellStats } from "../src/linux/doorbell.ts";
import { foreignSubscriberScenario } from "./pubsub_foreign.ts";

const linux = Deno.build.os === "linux";

function hasCc(): boolean {
  try {
    return new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

let binary: string | undefined;
/** Builds tests/peers/c_peer.c once per run, with warnings as errors. */
function cPeer(): string {
  if (binary) return binary;
  const source = new URL("./peers/c_peer.c", import.meta.url).pathname;
  const dir = Deno.makeTempDirSync({ prefix: "surfaceport-c-peer-" });
  // Removed when the test module unloads (deno test fires "unload" at the end of the run).
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // already gone
    }
  });
  const out = `${dir}/c_peer`;
  const result = new Deno.Command("cc", {
    args: ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", out, source],
  }).outputSync();
  assert.ok(result.success, `cc failed:\n${new TextDecoder().decode(result.stderr)}`);
  return (binary = out);
}

function seedMeta(seed: number): Uint8Array {
  return new Uint8Array(new Uint32Array([seed]).buffer);
}

const ignore = !linux || !hasCc();
if (ignore && linux) console.warn("c_peer tests skipped: no C compiler (cc) on PATH");

async function withCPeer(args: string[], body: (peer: Child, channel: Channel) => Promise<void>) {
  const name = uniqueName("c");
  using listener = listen(name);
  await using peer = new Child(cPeer(), [args[0], name, ...args.slice(1)]);
  using channel = await listener.accept({ timeout: 10000 });
  await peer.line("connected");
  await body(peer, channel);
  assert.equal((await peer.exit()).code, 0, peer.stderr);
}

Deno.test({
  name: "C peer: receives BGRA and 4:2:0 surfaces from surfaceport and verifies them",
  ignore,
  async fn() {
    const cases: [number, number, PixelFormat, string][] = [
      [1920, 1080, "BGRA", "BGRA"],
      [1280, 720, "420v", "420v"],
      [640, 480, "y420", "y420"],
      [100, 60, "L008", "L008"],
    ];
    await withCPeer(["recv", String(cases.length)], async (peer, channel) => {
      for (let i = 0; i < cases.length; i++) {
        const [width, height, format, fourcc] = cases[i];
        using surface = Surface.create({ width, height, format });
        fillPattern(surface, i + 3);
        await channel.send(surface, seedMeta(i + 3));
        assert.equal(await peer.line(/^(ok|bad)/), `ok ${i} ${width}x${height} ${fourcc}`);
      }
      await peer.line("done");
    });
  },
});

Deno.test({
  name: "C peer: echoes surfaces back (both directions), writing into our memory",
  ignore,
  async fn() {
    const frames = 50;
    await withCPeer(["echo", String(frames)], async (peer, channel) => {
      using surface = Surface.create({ width: 640, height: 360, format: "420f" });
      for (let i = 0; i < frames; i++) {
        fillPattern(surface, i);
        await channel.send(surface, seedMeta(i));
        using reply = await channel.receive({ timeout: 10000 });
        assert.equal(reply.surface.id, surface.id);
        assert.deepEqual([...(reply.meta as Uint8Array)], [...seedMeta(i + 1)]);
        assert.equal(verifyPattern(reply.surface, i + 1), undefined);
        assert.equal(reply.sequence, i);
        await peer.line(`ok ${i}`);
      }
      await peer.line("done");
    });
  },
});

Deno.test({
  name: "C peer: produces frames from its own memfd that surfaceport validates and maps",
  ignore,
  async fn() {
    const frames = 20;
    await withCPeer(["produce", "1920", "1080", String(frames)], async (peer, channel) => {
      using ack = Surface.create({ width: 2, height: 2 });
      const ids = new Set<number>();
      for (let i = 0; i < frames; i++) {
        using frame = await channel.receive({ timeout: 10000 });
        assert.equal(frame.surface.format, "BGRA");
        assert.equal(frame.surface.width, 1920);
        assert.equal(frame.sequence, i);
        ids.add(frame.surface.id);
        assert.equal(verifyPattern(frame.surface, i), undefined);
        frame.close();
        await channel.send(ack);
        await peer.line(`sent ${i}`);
      }
      assert.equal(ids.size, 1, "one memfd, reused");
      await peer.line("done");
    });
  },
});

Deno.test({
  name: "C peer: rings our doorbell (docs/protocol.md) and our parked receives wake through it",
  ignore,
  async fn() {
    const frames = 20;
    for (const mode of ["produce-ring", "produce"]) {
      const start = { ...doorbellStats };
      let rung = false;
      await withCPeer([mode, "64", "64", String(frames)], async (peer, channel) => {
        // Without a doorbell (no --allow-net) nothing can ring us: only the poll is left.
        rung = mode === "produce-ring" && bellTower.open;
        const expected = rung ? "doorbell" : "no doorbell";
        if (mode === "produce-ring") await peer.line(expected);
        using ack = Surface.create({ width: 2, height: 2 });
        let next = channel.receive({ timeout: 10000 });
        for (let i = 0; i < frames; i++) {
          using frame = await next;
          assert.equal(frame.sequence, i);
          assert.equal(verifyPattern(frame.surface, i), undefined);
          frame.close();
          await channel.send(ack);
          // Receive at once: it parks until the peer (woken by the ack) sends and rings.
          if (i + 1 < frames) next = channel.receive({ timeout: 10000 });
          await peer.line(`sent ${i}`);
        }
        await peer.line("done");
      });
      const bell = doorbellStats.bellWaits - start.bellWaits;
      const poll = doorbellStats.pollWaits - start.pollWaits;
      console.log(`  ${mode}: ${bell} parked on the doorbell, ${poll} on the poll`);
      if (rung) {
        // The first receive may park before the doorbell is bound (its HELLO still in flight);
        // a frame may beat a receive to the queue (then nothing parks).
        assert.ok(bell >= frames / 2 && poll <= 2, `${mode}: bell ${bell}, poll ${poll}`);
      } else {
        assert.equal(bell, 0, `${mode}: a peer that does not ring is waited for on the poll`);
      }
    }
  },
});

Deno.test({
  name: "C peer: subscribes to a publisher (SUBSCRIBE latest / queue, CREDIT after each frame)",
  ignore,
  async fn() {
    await foreignSubscriberScenario((name, args) =>
      new Child(cPeer(), ["subscribe", name, ...args])
    );
  },
});
