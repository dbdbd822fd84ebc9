/**
 * `cli to-pipewire` / `cli from-pipewire` against a real PipeWire 1.4 daemon
 * and WirePlumber started here in the Debian trixie chroot (headless, in a
 * pid and mount namespace of their own so that a kill takes both down):
 * a test pattern crosses PipeWire both ways, checked by pixels; the daemon
 * is killed and restarted under running bridges; a PipeWire consumer that is
 * stopped (never gives buffers back) slows nothing down.
 *
 * @module
 */

import assert from "node:assert/strict";
import { subscribe } from "../mod.ts";
import { pipeWireSourcePipeline } from "../src/gst/pipewire_pipelines.ts";
import { within } from "./gst_helpers.ts";
import { type Child, processTempDir, sleep } from "./helpers.ts";
import {
  checkFrame,
  cli,
  framesWithin,
  H,
  pipeWireFrames,
  publishFrames,
  pwClient,
  reason,
  skip,
  startPipeWire,
  stop,
  W,
} from "./pipewire_helpers.ts";

Deno.test("from-pipewire pipelines: direct first, then one exact conversion (two for a YUV format already wanted)", () => {
  const direct = pipeWireSourcePipeline("cam", "@a", "direct");
  assert.ok(direct.includes("unixfdsink") && !direct.includes("videoconvert"));
  assert.ok(direct.some((w) => w.includes("media.type=Video")), "WirePlumber needs media.type");
  assert.equal(
    pipeWireSourcePipeline("cam", "@a", "convert").filter((w) => w === "videoconvert").length,
    1,
  );
  assert.equal(
    pipeWireSourcePipeline("cam", "@a", "swap", "BGRA").filter((w) => w === "videoconvert").length,
    2,
  );
  const recolour = pipeWireSourcePipeline("cam", "@a", "recolour", "BGRA", "sRGB");
  assert.equal(recolour.filter((w) => w === "videoconvert").length, 1);
  assert.ok(recolour.includes("video/x-raw,format=BGRA,colorimetry=1:1:0:0"));
  assert.ok(
    pipeWireSourcePipeline("cam", "@a", "recolour", "BGRA", "1:1:0:0").includes(
      "video/x-raw,format=BGRA,colorimetry=1:1:1:0",
    ),
    "the colorimetry must differ from the source's, or videoconvert passes the frame through",
  );
  assert.throws(() => pipeWireSourcePipeline("a b ! filesrc", "@a", "direct"), RangeError);
});

Deno.test({
  name:
    `${skip}PipeWire both ways: a test card through to-pipewire to a PipeWire client, and back through from-pipewire, every pixel exact`,
  ignore: !!reason,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using daemon = await startPipeWire();
    void daemon;
    const dir = await processTempDir("sp-pw-");
    const node = `sp-card-${Deno.pid}`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(`${dir}/card.sock`, stopPublishing.signal);
    const toPw = cli(["to-pipewire", `${dir}/card.sock`, "--node-name", node, "--interval", "300"]);
    let fromPw: Child | undefined;
    try {
      await toPw.line("providing", 20000);
      // surfaceport → PipeWire: a plain PipeWire client reads the node.
      const bytes = await within(pipeWireFrames(node, 4), 25000, "frames from the PipeWire node");
      assert.equal(bytes.length, 4 * W * H * 4);
      checkFrame(bytes.subarray(3 * W * H * 4), W * 4, "RGBA");
      // PipeWire → surfaceport: the node (provided again after that client left) as a stream.
      // --format RGBA: the node is BGRA, so one exact conversion (a BGRA → BGRA copy would take
      // a swap, and a restart to find that out).
      fromPw = cli([
        "from-pipewire",
        node,
        `${dir}/out.sock`,
        "--format",
        "RGBA",
        "--interval",
        "300",
      ]);
      using frames = await subscribe(`${dir}/out.sock`, { timeout: 20000 });
      for (let i = 0; i < 5; i++) {
        // The first frame waits for the node to be provided again after the client above left,
        // and for from-pipewire to find that it must copy: seconds on a loaded machine.
        using frame = await within(
          frames.receive(),
          i === 0 ? 45000 : 20000,
          "a frame from from-pipewire",
        );
        assert.deepEqual([frame.surface.format, frame.surface.width, frame.surface.height], [
          "RGBA",
          W,
          H,
        ]);
        checkFrame(frame.surface.bytes(), frame.surface.planes[0].bytesPerRow, "RGBA");
      }
      // pipewiresink hands mapped memory here: from-pipewire says it copies, once.
      const line = await fromPw.line(/copies [1-9]\d* \(convert\)/, 10000);
      console.log(line.trim());
    } finally {
      if (fromPw) await stop(fromPw);
      await stop(toPw);
      stopPublishing.abort();
      await publishing.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `${skip}PipeWire daemon killed and restarted under running bridges: the stream comes back under the same name`,
  ignore: !!reason,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let daemon = await startPipeWire();
    const dir = await processTempDir("sp-pw-");
    const node = `sp-restart-${Deno.pid}`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(`${dir}/card.sock`, stopPublishing.signal);
    const toPw = cli(["to-pipewire", `${dir}/card.sock`, "--node-name", node, "--interval", "300"]);
    const fromPw = cli([
      "from-pipewire",
      node,
      `${dir}/out.sock`,
      "--interval",
      "300",
    ]);
    try {
      using frames = await subscribe(`${dir}/out.sock`, { timeout: 20000 });
      {
        using frame = await within(frames.receive(), 45000, "a frame before the restart");
        checkFrame(frame.surface.bytes(), frame.surface.planes[0].bytesPerRow, "BGRA");
      }
      await daemon[Symbol.asyncDispose]();
      await sleep(500);
      daemon = await startPipeWire();
      // The subscription never noticed: frames come again, through the new daemon.
      const before = frames.stats.received;
      await within(
        (async () => {
          for (;;) {
            using frame = await frames.receive();
            if (frames.stats.received > before + 3) {
              checkFrame(frame.surface.bytes(), frame.surface.planes[0].bytesPerRow, "BGRA");
              return;
            }
          }
        })(),
        30000,
        "frames after the daemon restart",
      );
      // The node is BGRA, as wanted: PipeWire hands mapped memory, copied once, unchanged.
      const line = await fromPw.line(/daemon restarts [1-9]/, 10000);
      assert.match(line, /copies [1-9]\d* \(recolour\)/);
      console.log(line.trim());
    } finally {
      await stop(fromPw);
      await stop(toPw);
      stopPublishing.abort();
      await publishing.catch(() => {});
      await daemon[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `${skip}a PipeWire client that never lets go (stopped) holds at most 4 surfaceport frames, never slows the publisher, and the node serves the next client once it is killed`,
  ignore: !!reason,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using daemon = await startPipeWire();
    void daemon;
    const dir = await processTempDir("sp-pw-");
    const node = `sp-hoard-${Deno.pid}`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(`${dir}/card.sock`, stopPublishing.signal);
    const toPw = cli(["to-pipewire", `${dir}/card.sock`, "--node-name", node, "--interval", "200"]);
    let stalled: Child | undefined;
    try {
      await toPw.line("providing", 20000);
      // A PipeWire consumer that is stopped: it never gives a buffer back to PipeWire. Stopped
      // once it took a buffer: one stopped before its link was set up holds none, pipewiresink
      // never blocks and nobody is cut off (a fixed 1.5 s wait for it to start was not always
      // enough under load: "timed out waiting for /cut off/"). It may find the node gone for a
      // moment (provided again after a client): retry.
      for (let attempt = 0;; attempt++) {
        stalled = pwClient([
          "pipewiresrc",
          `target-object=${node}`,
          "stream-properties=p,media.type=Video,media.category=Capture,media.role=Camera",
          "!",
          "fakesink",
          "silent=false",
        ], true);
        const streaming = await stalled.line(/last-message = chain/, 15000).then(
          () => true,
          (error) => (console.log(`the PipeWire consumer took no buffer: ${error}`), false),
        );
        if (streaming) break;
        assert.ok(attempt < 5, `the PipeWire consumer keeps failing: ${stalled.stderr}`);
        await stalled[Symbol.asyncDispose]();
      }
      stalled.process.kill("SIGSTOP");
      await sleep(1500);
      const held = Number(/held (\d+)/.exec(await toPw.line(/held \d+/, 5000))![1]);
      assert.ok(held <= 4, `to-pipewire holds ${held} frames for a stopped consumer (max 4)`);
      // pipewiresink blocks behind the stopped consumer, so to-gst cuts its unixfdsrc off (2 s
      // stall). unixfdsrc never reconnects and the pipeline does not fail: when the consumer's
      // death did not fail it either (a race, ~1 run in 6), the node fed the next client nothing
      // for 30 s and more. to-pipewire restarts a pipeline whose unixfdsrc is gone, at once.
      await toPw.line(/cut off [1-9]/, 10000);
      console.log((await toPw.line(/client lost [1-9]/, 5000)).trim());
      stalled.process.kill("SIGKILL");
      const started = performance.now();
      const bytes = await within(pipeWireFrames(node, 3), 40000, "frames for the next client");
      console.log(
        `the next client got frames after ${(performance.now() - started).toFixed(0)} ms`,
      );
      checkFrame(bytes.subarray(2 * W * H * 4), W * 4, "RGBA");
    } finally {
      if (stalled) await stalled[Symbol.asyncDispose]();
      await stop(toPw);
      stopPublishing.abort();
      const longest = await publishing.catch(() => -1);
      console.log(`longest publisher.send: ${longest.toFixed(1)} ms`);
      // A publisher is never slowed down by a consumer (README); through a stopped PipeWire
      // client it must not be either. 1 s: far above a loaded machine's hiccups, far below a stall.
      assert.ok(longest >= 0 && longest < 1000, `publisher.send took ${longest} ms`);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `${skip}from-pipewire: a subscriber that keeps 3 frames and stops reading never slows another one down`,
  ignore: !!reason,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using daemon = await startPipeWire();
    void daemon;
    const dir = await processTempDir("sp-pw-");
    const node = `sp-keeper-${Deno.pid}`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(`${dir}/card.sock`, stopPublishing.signal);
    const toPw = cli(["to-pipewire", `${dir}/card.sock`, "--node-name", node, "--interval", "300"]);
    const fromPw = cli([
      ...["from-pipewire", node, `${dir}/out.sock`],
      ...["--format", "RGBA", "--interval", "300"],
    ]);
    const kept: Disposable[] = [];
    try {
      using witness = await subscribe(`${dir}/out.sock`, { timeout: 20000 });
      using _first = await within(witness.receive(), 45000, "a first frame from from-pipewire");
      _first[Symbol.dispose]();
      const alone = await framesWithin(witness, 2000);
      // depth 4: it reads 3 frames and keeps them open, then reads nothing (4 more wait in its
      // socket and one at the publisher: its budget). It is never cut off (it has credits).
      using keeper = await subscribe(`${dir}/out.sock`, { timeout: 20000, depth: 4 });
      for (let i = 0; i < 3; i++) kept.push(await within(keeper.receive(), 10000, "keeper frame"));
      await sleep(300);
      const beside = await framesWithin(witness, 2000);
      console.log(`witness frames in 2 s: alone ${alone}, beside the keeper ${beside}`);
      // 1 s at 30/s is ~30 frames: half the rate alone is far above a loaded machine's jitter,
      // and far above what a starved witness gets (none: every held buffer is the keeper's).
      assert.ok(alone >= 10, `the witness got only ${alone} frames in 2 s alone`);
      assert.ok(
        beside >= alone / 2,
        `beside the keeper the witness got ${beside} (alone ${alone})`,
      );
      const line = await fromPw.line(/held (\d+)/, 5000);
      console.log(line.trim());
    } finally {
      for (const frame of kept) frame[Symbol.dispose]();
      await stop(fromPw);
      await stop(toPw);
      stopPublishing.abort();
      await publishing.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
