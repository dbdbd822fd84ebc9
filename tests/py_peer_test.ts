import assert from "node:assert/strict";
import { type Channel, listen, type PixelFormat, Surface } from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { Child, uniqueName } from "./helpers.ts";
import { foreignSubscriberScenario } from "./pubsub_foreign.ts";

const linux = Deno.build.os === "linux";

function hasPython(): boolean {
  try {
    return new Deno.Command("python3", {
      args: ["-c", "import socket, sys; sys.exit(0 if hasattr(socket, 'send_fds') else 1)"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

const ignore = !linux || !hasPython();
if (ignore && linux) console.warn("py_peer tests skipped: no python3 >= 3.9 on PATH");

const script = new URL("./peers/py_peer.py", import.meta.url).pathname;

async function withPythonPeer(
  args: string[],
  body: (peer: Child, channel: Channel) => Promise<void>,
) {
  const name = uniqueName("py");
  using listener = listen(name);
  await using peer = new Child("python3", [script, args[0], name, ...args.slice(1)]);
  using channel = await listener.accept({ timeout: 10000 });
  await peer.line("connected");
  await body(peer, channel);
  assert.equal((await peer.exit()).code, 0, peer.stderr);
}

Deno.test({
  name: "Python peer (socket.recv_fds): receives and verifies BGRA and 4:2:0 surfaces",
  ignore,
  async fn() {
    const cases: [number, number, PixelFormat][] = [[64, 48, "BGRA"], [64, 32, "420v"], [
      32,
      16,
      "y420",
    ]];
    await withPythonPeer(["recv", String(cases.length)], async (peer, channel) => {
      for (let i = 0; i < cases.length; i++) {
        const [width, height, format] = cases[i];
        using surface = Surface.create({ width, height, format });
        fillPattern(surface, i + 5);
        await channel.send(surface, new Uint8Array(new Uint32Array([i + 5]).buffer));
        assert.equal(await peer.line(/^(ok|bad)/), `ok ${i} ${width}x${height} ${format}`);
        // The peer closed its descriptor after verifying: the surface is free again.
        assert.equal(surface.inUse, false);
      }
      await peer.line("done");
    });
  },
});

Deno.test({
  name: "Python peer (socket.send_fds): produces frames that surfaceport validates and maps",
  ignore,
  async fn() {
    await withPythonPeer(["produce", "96", "64", "5"], async (peer, channel) => {
      using ack = Surface.create({ width: 2, height: 2 });
      for (let i = 0; i < 5; i++) {
        using frame = await channel.receive({ timeout: 10000 });
        assert.equal(frame.surface.format, "BGRA");
        assert.equal(frame.sequence, i);
        assert.deepEqual([...(frame.meta as Uint8Array)], [
          ...new Uint8Array(new Uint32Array([i]).buffer),
        ]);
        assert.equal(verifyPattern(frame.surface, i), undefined);
        frame.close();
        await channel.send(ack);
        await peer.line(`sent ${i}`);
      }
      await peer.line("done");
    });
  },
});

Deno.test({
  name:
    "Python peer: subscribes to a publisher (SUBSCRIBE latest / queue, CREDIT after each frame)",
  ignore,
  async fn() {
    await foreignSubscriberScenario((name, args) =>
      new Child("python3", [script, "subscribe", name, ...args])
    );
  },
});
