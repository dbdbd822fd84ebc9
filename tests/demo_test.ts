import assert from "node:assert/strict";
import { decode } from "fast-png";
import { pixel } from "../examples/frames.ts";

Deno.test({
  name:
    "demo: streams from a pool to a consumer process that verifies every frame and writes a PNG",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const root = new URL("..", import.meta.url).pathname;
    const demo = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        "--allow-env",
        "examples/demo.ts",
        "--seconds",
        "1",
        "--width",
        "320",
        "--height",
        "240",
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => demo.kill("SIGKILL"), 60000);
    const { code, stdout, stderr } = await demo.output();
    clearTimeout(timer);
    const out = new TextDecoder().decode(stdout);
    assert.equal(code, 0, `${out}\n${new TextDecoder().decode(stderr)}`);
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
    const root = new URL("..", import.meta.url).pathname;
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", "--allow-run", "examples/demo.ts"],
      cwd: root,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 1);
    assert.match(new TextDecoder().decode(stderr), /^the demo needs --allow-ffi \(/);
  },
});
