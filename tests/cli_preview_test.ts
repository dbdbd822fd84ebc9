/**
 * The `surfaceport preview` page, run as a user runs it (`deno run
 * cli/main.ts preview ...` in a child process): headless Chromium shows the
 * test card's colours and a moving frame counter, and switches streams; the
 * server refuses foreign Hosts and WebSockets from other origins.
 */
import assert from "node:assert/strict";
import { decode } from "fast-png";
import { CARD_BARS } from "../cli/testcard.ts";
import { Browser, findChromium } from "./browser.ts";
import { Child, CLI, CLI_FLAGS, uniqueName } from "./helpers.ts";
import { testcard } from "./cli_helpers.ts";

const linux = Deno.build.os === "linux";

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
