/**
 * The `surfaceport` command line, run as a user runs it (`deno run
 * cli/main.ts ...` in a child process): list, watch in plain-lines mode,
 * snapshot of every pixel format (the PNG decoded and compared with the
 * source pixels), and the preview page in headless Chromium.
 */
import assert from "node:assert/strict";
import { decode } from "fast-png";
import { listen, type PixelFormat, Surface } from "../mod.ts";
import { CARD_BARS } from "../cli/testcard.ts";
import { openProducer } from "../cli/source.ts";
import { Browser, findChromium } from "./browser.ts";
import {
  Child,
  CLI,
  CLI_FLAGS,
  runRepoScript,
  type ScriptOutput,
  sleep,
  uniqueName,
} from "./helpers.ts";

const linux = Deno.build.os === "linux";

/** Runs the CLI to completion (bounded), returning exit code and output. */
function runCli(args: string[], ms = 30000): Promise<ScriptOutput> {
  return runRepoScript(CLI_FLAGS.slice(1), "cli/main.ts", args, ms);
}

/** Starts `surfaceport testcard NAME ...` and waits until it publishes. */
async function testcard(name: string, ...args: string[]): Promise<Child> {
  const child = new Child(Deno.execPath(), [...CLI_FLAGS, CLI, "testcard", name, ...args]);
  try {
    await child.line(`testcard ${name}:`);
  } catch (error) {
    await child[Symbol.asyncDispose]();
    throw error;
  }
  return child;
}

Deno.test({
  name: "cli list: shows a live stream by name, as lines and as JSON",
  ignore: !linux,
  async fn() {
    const name = uniqueName("cli-list");
    await using card = await testcard(name, "--width", "64", "--height", "32");
    const pid = card.process.pid;
    const { code, stdout, stderr } = await runCli(["list"]);
    assert.equal(code, 0, stderr);
    const line = stdout.split("\n").find((l) => l.startsWith(`${name} `));
    assert.ok(line, `no line for ${name} in:\n${stdout}`);
    assert.match(line, new RegExp(`^${name} +publisher +pid=${pid} subscribers=0$`));
    // A plain listener is listed as a channel.
    const channelName = uniqueName("cli-list-channel");
    using _listener = listen(channelName);
    const json = await runCli(["list", "--json"]);
    const entries = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(
      entries.some((e) => e.name === name && e.kind === "publisher" && e.pid === pid),
      json.stdout,
    );
    assert.ok(
      entries.some((e) => e.name === channelName && e.kind === "channel" && e.pid === Deno.pid),
      json.stdout,
    );
  },
});

Deno.test({
  name:
    "cli watch: plain lines when stdout is not a terminal; ends after --frames and at stream end",
  ignore: !linux,
  async fn() {
    const name = uniqueName("cli-watch");
    await using _card = await testcard(name, "--width", "128", "--height", "64", "--fps", "60");
    const { code, stdout, stderr } = await runCli([
      "watch",
      name,
      "--interval",
      "200",
      "--frames",
      "30",
    ]);
    assert.equal(code, 0, stderr);
    assert.ok(!stdout.includes("\x1b"), "no terminal escapes in plain-lines mode");
    assert.ok(!stdout.includes("\r"), "no carriage returns in plain-lines mode");
    const lines = stdout.trim().split("\n");
    assert.match(lines[0], new RegExp(`^watching ${name} \\(producer pid \\d+\\)$`));
    const report =
      /^(\S+): BGRA 128x64 {2}([\d.]+) fps {2}latency p50 ([\d.]+) ms p99 ([\d.]+) ms {2}drops (\d+) {2}frames (\d+) {2}meta \{"frame":(\d+)\}/;
    for (const line of lines.slice(1)) assert.match(line, report);
    const last = report.exec(lines.at(-1)!)!;
    assert.equal(last[6], "30");
    assert.match(lines.at(-1)!, /\(stopped after 30 frames\)$/);
    const fps = Math.max(...lines.slice(1).map((l) => Number(report.exec(l)![2])));
    assert.ok(fps > 5, `frames/s ${fps} in:\n${stdout}`);
  },
});

Deno.test({
  name: "cli watch: exits 0 with 'stream ended' when the producer goes, and on Ctrl-C",
  ignore: !linux,
  async fn() {
    const name = uniqueName("cli-end");
    await using card = await testcard(name, "--width", "64", "--height", "32", "--fps", "20");
    await using watcher = new Child(Deno.execPath(), [
      ...CLI_FLAGS,
      CLI,
      "watch",
      name,
      "--interval",
      "100",
    ]);
    await watcher.line(/BGRA 64x32/);
    card.process.kill("SIGINT"); // the testcard ends cleanly on Ctrl-C too
    assert.equal((await card.exit()).code, 0, card.stderr);
    await watcher.line(/\(stream ended\)$/);
    assert.equal((await watcher.exit()).code, 0, watcher.stderr);

    const name2 = uniqueName("cli-int");
    await using card2 = await testcard(name2, "--width", "64", "--height", "32", "--fps", "20");
    await using watcher2 = new Child(Deno.execPath(), [...CLI_FLAGS, CLI, "watch", name2]);
    await watcher2.line(/^watching /);
    await watcher2.line(/BGRA 64x32/);
    watcher2.process.kill("SIGINT");
    await watcher2.line(/\(interrupted\)$/);
    assert.equal((await watcher2.exit()).code, 0, watcher2.stderr);
    // Ctrl-C went to the watcher alone: the testcard it watched is still running.
    const running = await Promise.race([
      card2.process.status.then(() => false),
      sleep(300).then(() => true),
    ]);
    assert.ok(running, `the testcard exited with the watcher:\n${card2.stderr}`);
  },
});

/** Reference Y'CbCr → RGB, written here from the standards (float, then rounded). */
function referenceRGB(
  y: number,
  cb: number,
  cr: number,
  matrix: "bt601" | "bt709",
  full: boolean,
): number[] {
  const [kr, kb] = matrix === "bt601" ? [0.299, 0.114] : [0.2126, 0.0722];
  const Y = full ? y / 255 : (y - 16) / 219;
  const Pb = full ? (cb - 128) / 255 : (cb - 128) / 224;
  const Pr = full ? (cr - 128) / 255 : (cr - 128) / 224;
  const R = Y + 2 * (1 - kr) * Pr;
  const B = Y + 2 * (1 - kb) * Pb;
  const G = (Y - kr * R - kb * B) / (1 - kr - kb);
  return [R, G, B].map((v) => Math.max(0, Math.min(255, Math.round(v * 255))));
}

/** Fills every plane with bytes that vary by position (chroma kept in a plausible range). */
function fillSource(surface: Surface): void {
  for (let p = 0; p < surface.planes.length; p++) {
    const bytes = surface.bytes(p);
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = p === 0 ? (i * 7 + (i >> 6) * 3) & 0xff : 64 + ((i * 5) & 0x7f);
    }
  }
}

/** The RGBA the source surface shows at (x, y), computed from its bytes here. */
function sourcePixel(surface: Surface, x: number, y: number, matrix: "bt601" | "bt709"): number[] {
  const planes = surface.planes;
  const at = (p: number, offset: number) => surface.bytes(p)[offset];
  switch (surface.format) {
    case "BGRA": {
      const o = y * planes[0].bytesPerRow + x * 4;
      return [at(0, o + 2), at(0, o + 1), at(0, o), at(0, o + 3)];
    }
    case "RGBA": {
      const o = y * planes[0].bytesPerRow + x * 4;
      return [at(0, o), at(0, o + 1), at(0, o + 2), at(0, o + 3)];
    }
    case "L008": {
      const v = at(0, y * planes[0].bytesPerRow + x);
      return [v, v, v, 255];
    }
    default: {
      const luma = at(0, y * planes[0].bytesPerRow + x);
      const cy = y >> 1, cx = x >> 1;
      const [cb, cr] = surface.format === "y420"
        ? [at(1, cy * planes[1].bytesPerRow + cx), at(2, cy * planes[2].bytesPerRow + cx)]
        : [
          at(1, cy * planes[1].bytesPerRow + cx * 2),
          at(1, cy * planes[1].bytesPerRow + cx * 2 + 1),
        ];
      return [...referenceRGB(luma, cb, cr, matrix, surface.format === "420f"), 255];
    }
  }
}

const SNAPSHOT_CASES: [PixelFormat, "bt601" | "bt709" | undefined][] = [
  ["BGRA", undefined],
  ["RGBA", undefined],
  ["L008", undefined],
  ["420v", "bt601"],
  ["420v", "bt709"],
  ["420f", "bt709"],
  ["y420", undefined], // default matrix: BT.601 for 96 rows
];

Deno.test({
  name: "cli snapshot: a PNG per pixel format, decoded and compared with the source pixels",
  ignore: !linux,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "surfaceport-snapshot-" });
    try {
      for (const [format, matrix] of SNAPSHOT_CASES) {
        const name = uniqueName("cli-snap");
        using producer = openProducer(name);
        using surface = Surface.create({ width: 128, height: 96, format });
        fillSource(surface);
        const out = `${dir}/${format}-${matrix ?? "default"}.png`;
        const done = runCli(["snapshot", name, out, ...(matrix ? ["--matrix", matrix] : [])]);
        let finished = false;
        done.finally(() => (finished = true));
        while (!finished) {
          await producer.send(surface, { format });
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const { code, stdout, stderr } = await done;
        assert.equal(code, 0, stderr);
        const used = matrix ?? "bt601";
        assert.match(stdout, new RegExp(`^wrote ${out}: ${format} 128x96, frame \\d+`));
        if (format.startsWith("420") || format === "y420") {
          assert.match(stdout, new RegExp(`matrix ${used}`));
          assert.match(stdout, format === "420f" ? /full range/ : /video range/);
        }
        const png = decode(Deno.readFileSync(out));
        assert.equal(png.width, 128);
        assert.equal(png.height, 96);
        assert.equal(png.channels, 4);
        assert.equal(png.depth, 8);
        let worst = 0;
        for (let y = 0; y < 96; y++) {
          for (let x = 0; x < 128; x++) {
            const expected = sourcePixel(surface, x, y, used);
            for (let c = 0; c < 4; c++) {
              worst = Math.max(worst, Math.abs(png.data[(y * 128 + x) * 4 + c] - expected[c]));
            }
          }
        }
        // RGB and grey are copied exactly; YCbCr within one step of the float reference.
        assert.ok(
          worst <= (format === "BGRA" || format === "RGBA" || format === "L008" ? 0 : 1),
          `${format} ${used}: worst difference ${worst}`,
        );
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli snapshot / watch: bad arguments give usage errors (exit 2), a missing stream exit 1",
  ignore: !linux,
  async fn() {
    const bad = await runCli(["snapshot", "x", "--matrix", "bt2020"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--matrix must be bt601 or bt709/);
    assert.match(bad.stderr, /usage: surfaceport snapshot/);
    const missing = await runCli(["watch", uniqueName("nobody"), "--timeout", "0"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^surfaceport watch: /);
    const unknown = await runCli(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const help = await runCli(["help"]);
    for (const command of ["list", "watch", "snapshot", "preview", "testcard"]) {
      assert.match(help.stdout, new RegExp(`^  ${command} `, "m"));
    }
  },
});

const chromium = linux ? findChromium() : { reason: "not Linux" };
if (linux && !chromium.path) console.warn(`cli preview test skipped: ${chromium.reason}`);

Deno.test({
  name:
    "cli preview: headless Chromium shows the test card's colours, a moving frame counter, and switches streams",
  ignore: !chromium.path,
  async fn() {
    const name = uniqueName("cli-preview");
    await using _card = await testcard(
      name,
      "--format",
      "NV12",
      "--width",
      "320",
      "--height",
      "180",
      "--fps",
      "30",
    );
    await using server = new Child(Deno.execPath(), [
      ...CLI_FLAGS,
      CLI,
      "preview",
      name,
      "--port",
      "0",
    ]);
    const url = /(http:\/\/127\.0\.0\.1:\d+\/\S*)/.exec(await server.line(/^preview: http/))![1];
    await using browser = await Browser.open(chromium.path!, url);
    const shown = async () =>
      Number(await browser.evaluate(`document.getElementById("shown").textContent`));
    const end = performance.now() + 30000;
    while (!(await shown() >= 3)) {
      if (performance.now() > end) {
        throw new Error(
          `the page showed no frames; status: ${await browser.evaluate(
            `document.getElementById("status").textContent`,
          )}\n${server.stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const first = await shown();
    const screenshot = decode(await browser.screenshot());
    // It moves on (not within a fixed 500 ms, which a starved Chromium could miss).
    const moving = performance.now() + 20000;
    let later = await shown();
    while (later <= first && performance.now() < moving) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      later = await shown();
    }
    assert.ok(later > first, `frame counter did not move in 20 s: ${first} -> ${later}`);
    assert.equal(
      await browser.evaluate(`document.getElementById("format").textContent`),
      "420v 320x180",
    );
    // The stream's numbers, as measured by the preview (a consumer) on every frame it received.
    const field = (id: string) =>
      browser.evaluate(`document.getElementById("${id}").textContent`) as Promise<string>;
    const limit = performance.now() + 20000;
    while (!(Number(await field("fps")) > 5)) {
      assert.ok(performance.now() < limit, `frames/s never above 5: ${await field("fps")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.match(await field("latency"), /^p50 \d+\.\d\d ms {2}p99 \d+\.\d\d ms$/);
    assert.match(await field("drops"), /^\d+$/);
    assert.match(await field("producer"), /^pid \d+$/);
    assert.match(await field("meta"), /^\{"frame":\d+\}$/);
    // testcard's pool has 4 surfaces; the consumer sees some of them come round.
    const pool = /^(\d+) surfaces seen/.exec(await field("pool"));
    assert.ok(pool && Number(pool[1]) >= 1 && Number(pool[1]) <= 4, await field("pool"));
    // The canvas sits at the page's top left, unscaled: bar i spans x = 40i .. 40i + 39.
    const channels = screenshot.channels;
    const pixelAt = (x: number, y: number) => {
      const o = (y * screenshot.width + x) * channels;
      return [screenshot.data[o], screenshot.data[o + 1], screenshot.data[o + 2]];
    };
    for (let bar = 0; bar < 8; bar++) {
      for (const y of [20, 100]) {
        const actual = pixelAt(bar * 40 + 20, y);
        const expected = CARD_BARS[bar];
        assert.ok(
          actual.every((v, c) => Math.abs(v - expected[c]) <= 12),
          `bar ${bar} at y ${y}: screenshot ${actual}, card ${expected}`,
        );
      }
    }
    // Below the bars: black, except the moving white box.
    const bottom = Array.from({ length: 320 }, (_, x) => pixelAt(x, 160));
    const white = bottom.filter((p) => p.every((v) => v > 230)).length;
    const black = bottom.filter((p) => p.every((v) => v < 25)).length;
    assert.ok(white >= 30 && white <= 50, `box width ${white}`);
    assert.ok(white + black >= 310, `bottom row is black and white: ${white} + ${black}`);

    // The page lists the names `list` shows and switches to another stream.
    const other = uniqueName("cli-preview-other");
    await using _other = await testcard(
      other,
      "--format",
      "I420",
      "--width",
      "160",
      "--height",
      "120",
    );
    const text = (id: string) => browser.evaluate(`document.getElementById("${id}").textContent`);
    const until = async (what: string, condition: () => Promise<boolean>) => {
      const limit = performance.now() + 20000;
      while (!(await condition())) {
        if (performance.now() > limit) throw new Error(`timed out waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await until("the other name in the picker", async () =>
      (await browser.evaluate(
        `[...document.getElementById("names").options].map((o) => o.value).join("\\n")`,
      ) as string).split("\n").includes(other));
    await browser.evaluate(`(() => {
      const select = document.getElementById("names");
      select.value = ${JSON.stringify(other)};
      select.dispatchEvent(new Event("change"));
    })()`);
    await until(
      "the other stream's frames",
      async () => await text("format") === "y420 160x120" && Number(await text("shown")) >= 3,
    );
    const switched = decode(await browser.screenshot());
    const at = (x: number, y: number) => {
      const o = (y * switched.width + x) * switched.channels;
      return [switched.data[o], switched.data[o + 1], switched.data[o + 2]];
    };
    for (let bar = 0; bar < 8; bar++) {
      const actual = at(bar * 20 + 10, 30);
      assert.ok(
        actual.every((v, c) => Math.abs(v - CARD_BARS[bar][c]) <= 12),
        `after switching, bar ${bar}: screenshot ${actual}, card ${CARD_BARS[bar]}`,
      );
    }
    assert.equal(
      await browser.evaluate(`new URLSearchParams(location.search).get("name")`),
      other,
    );

    // Ctrl-C ends the server cleanly with the page still connected.
    server.process.kill("SIGINT");
    assert.equal((await server.exit()).code, 0, server.stderr);
  },
});

function hasScript(): boolean {
  try {
    return new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "cli watch: on a terminal the block is redrawn in place (util-linux script as the terminal)",
  ignore: !linux || !hasScript(),
  async fn() {
    const name = uniqueName("cli-tty");
    await using _card = await testcard(name, "--width", "64", "--height", "32", "--fps", "60");
    const command = [
      Deno.execPath(),
      ...CLI_FLAGS,
      CLI,
      "watch",
      name,
      "--interval",
      "100",
      "--frames",
      "40",
    ]
      .map((word) => `'${word}'`).join(" ");
    const child = new Deno.Command("script", {
      args: ["-qec", command, "/dev/null"],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
    const { code, stdout } = await child.output();
    clearTimeout(timer);
    // Escape sequences shown as "ESC" so the patterns need no control characters.
    const out = new TextDecoder().decode(stdout).replaceAll("\x1b", "ESC");
    assert.equal(code, 0, out);
    assert.match(out, /ESC\[7A/, "moves the cursor up over the previous block");
    assert.match(out, /ESC\[2K {2}format {4}BGRA 64x32/);
    assert.match(out, /ESC\[2K {2}latency {3}p50 [\d.]+ ms {3}p99 [\d.]+ ms/);
    assert.match(out, /stopped after 40 frames/);
    assert.doesNotMatch(out, /^watching /m, "no plain-lines header on a terminal");
  },
});

Deno.test({
  name: "cli preview: refuses foreign Hosts (DNS rebinding) and WebSockets from other origins",
  ignore: !linux,
  async fn() {
    await using server = new Child(Deno.execPath(), [
      ...CLI_FLAGS,
      CLI,
      "preview",
      "--port",
      "0",
    ]);
    const printed = new URL(/(http:\/\/\S+)/.exec(await server.line(/^preview: http/))![1]);
    const port = Number(printed.port);
    const token = printed.searchParams.get("token")!;
    const base = `http://127.0.0.1:${port}`;
    // The printed link moves its token into a cookie and out of the address bar.
    const first = await fetch(printed, { redirect: "manual" });
    assert.equal(first.status, 302);
    assert.equal(first.headers.get("location"), "/");
    const cookie = first.headers.get("set-cookie")!.split(";")[0];
    assert.equal(cookie, `surfaceport-preview-${port}=${token}`);
    await first.body?.cancel();
    const ok = await fetch(`${base}/`, { headers: { cookie } });
    assert.equal(ok.status, 200);
    assert.match(await ok.text(), /surfaceport preview/);
    const list = await fetch(`${base}/api/list`, { headers: { cookie } });
    assert.ok(Array.isArray(await list.json()));
    const without = await fetch(`${base}/api/list`);
    assert.equal(without.status, 403, "no token, no list");
    await without.body?.cancel();
    // fetch() sets Host from the URL: a raw request carries the rebound name. It carries the
    // token too, so that the Host check alone is what refuses it.
    const connection = await Deno.connect({ hostname: "127.0.0.1", port });
    await connection.write(
      new TextEncoder().encode(
        `GET /api/list HTTP/1.1\r\nHost: evil.example:${port}\r\nCookie: ${cookie}\r\n` +
          "Connection: close\r\n\r\n",
      ),
    );
    let response = "";
    for await (const chunk of connection.readable) response += new TextDecoder().decode(chunk);
    assert.match(response, /^HTTP\/1\.1 403 /);
    assert.match(response, /refused: Host "evil\.example:\d+" is not this preview server/);
    const upgrade = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13" };
    const key = { "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" };
    const foreign = await fetch(`${base}/ws?name=x`, {
      headers: { ...upgrade, ...key, origin: "http://evil.example", cookie },
    });
    assert.equal(foreign.status, 403);
    assert.match(await foreign.text(), /refused: a WebSocket from http:\/\/evil\.example/);
    // A WebSocket with no Origin at all is refused too (the page's own origin is accepted: the
    // Chromium preview test above opens one).
    const socket = new WebSocket(
      `ws://127.0.0.1:${port}/ws?name=${uniqueName("nothing")}&token=${token}`,
    );
    const opened = await new Promise<boolean>((resolve) => {
      socket.onopen = () => resolve(true);
      socket.onerror = () => resolve(false);
    });
    socket.close();
    assert.equal(opened, false, "Deno's WebSocket sends no Origin: refused like a foreign one");
    server.process.kill("SIGINT");
    assert.equal((await server.exit()).code, 0, server.stderr);
  },
});
