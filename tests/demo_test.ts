import assert from "node:assert/strict";

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
    const png = /last frame\s+(\S+\.png)/.exec(out)![1];
    const bytes = Deno.readFileSync(png);
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  },
});
