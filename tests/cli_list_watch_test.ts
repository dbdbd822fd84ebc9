/**
 * The `surfaceport` command line, run as a user runs it (`deno run
 * cli/main.ts ...` in a child process): list, and watch in plain-lines mode
 * and on a terminal (util-linux `script`), ending with the stream and on
 * Ctrl-C.
 */
import assert from "node:assert/strict";
import { listen } from "../mod.ts";
import { Child, CLI, CLI_FLAGS, sleep, uniqueName } from "./helpers.ts";
import { runCli, testcard } from "./cli_helpers.ts";

const linux = Deno.build.os === "linux";

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
