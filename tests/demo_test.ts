import assert from "node:assert/strict";
import { decode } from "fast-png";
import { pixel } from "../examples/frames.ts";
import { EXAMPLE_FLAGS, runRepoScript } from "./helpers.ts";

Deno.test({
  name:
    "demo: streams from a pool to a consumer process that verifies every frame and writes a PNG",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { code, stdout: out, stderr } = await runRepoScript(EXAMPLE_FLAGS, "examples/demo.ts", [
      "--seconds",
      "1",
      "--width",
      "320",
      "--height",
      "240",
    ]);
    assert.equal(code, 0, `${out}\n${stderr}`);
    assert.match(out, /received\s+(\d+) frames, 0 with wrong pixels/);
    const sent = Number(/sent\s+(\d+) frames/.exec(out)![1]);
    const received = Number(/received\s+(\d+) frames/.exec(out)![1]);
    assert.ok(sent > 10 && received === sent, out);
    assert.match(out, /pool\s+\d+ distinct surfaces/);
    // stdout is a pipe here: plain progress lines, no carriage returns.
    assert.ok(!out.includes("\r"), "no \\r progress when stdout is not a terminal");
    assert.match(out, /^streaming 320x240 BGRA: \d+ frames/m);
    // The PNG is the last frame sent, pixel for pixel, and says which it is.
    const [, png, frame] = /last frame\s+(\S+\.png) \(frame (\d+)\)/.exec(out)!;
    assert.equal(Number(frame), sent - 1);
    const image = decode(Deno.readFileSync(png));
    assert.equal(image.width, 320);
    let wrong = 0;
    for (let y = 0; y < 240; y++) {
      for (let x = 0; x < 320; x++) {
        const bgra = pixel(x, y, sent - 1), o = (y * 320 + x) * 4;
        const rgba = [(bgra >> 16) & 0xff, (bgra >> 8) & 0xff, bgra & 0xff, bgra >>> 24];
        if (rgba.some((v, c) => image.data[o + c] !== v)) wrong++;
      }
    }
    assert.equal(wrong, 0, "the PNG shows the last frame");
  },
});

Deno.test({
  name: "demo: without --allow-ffi it says which permissions are missing",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { code, stderr } = await runRepoScript(
      ["--allow-read", "--allow-write", "--allow-run"],
      "examples/demo.ts",
    );
    assert.equal(code, 1);
    assert.match(stderr, /^the demo needs --allow-ffi \(/);
  },
});
