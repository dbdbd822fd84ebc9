/**
 * The README's Use snippets are files under examples/ (the README shows each
 * file verbatim, starting with its run command), and they run as written:
 * the consumer prints frames, and the producer ends cleanly when the
 * consumer goes away.
 */
import assert from "node:assert/strict";
import { Child, uniqueName } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;
const readme = Deno.readTextFileSync(`${root}README.md`);

/** Every ```ts block of the README (the Use and publish/subscribe snippets). */
function useSnippets(): string[] {
  assert.ok(readme.includes("\n## Use\n"), "README has a ## Use section");
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

/** `// examples/NAME.ts — run: COMMAND` on a snippet's first line. */
const HEADER = /^\/\/ (examples\/[\w-]+\.ts) — run: (deno run [^\n]+)\n/;

Deno.test("README: every snippet is an examples/ file, verbatim, with its run command", () => {
  const snippets = useSnippets();
  assert.ok(snippets.length >= 4, "the README has its Use and publish/subscribe snippets");
  for (const snippet of snippets) {
    const header = HEADER.exec(snippet);
    assert.ok(header, `snippet without an '// examples/X.ts — run: ...' line:\n${snippet}`);
    const file = Deno.readTextFileSync(`${root}${header[1]}`);
    assert.equal(snippet, file, `README's snippet differs from ${header[1]}`);
    assert.match(header[2], new RegExp(`^deno run (--allow-\\w+ )+${header[1]}( \\w+)?$`));
  }
});

Deno.test("README: says how to get Deno (install script and npm)", () => {
  assert.match(readme, /curl -fsSL https:\/\/deno\.land\/install\.sh \| sh/);
  assert.match(readme, /npm install deno/);
});

/** The run command of `file` from its header, with the stream name replaced. */
function runCommand(file: string, name: string): string[] {
  const header = HEADER.exec(Deno.readTextFileSync(`${root}${file}`))!;
  const words = header[2].split(" ");
  assert.equal(words.at(-1), "camera");
  return [...words.slice(1, -1), name];
}

Deno.test({
  name:
    "examples: the Use snippets run as written; the producer ends cleanly when the consumer goes",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("use");
    const inRoot = (args: string[]) =>
      args.map((a) => a.startsWith("examples/") ? `${root}${a}` : a);
    await using consumer = new Child(
      Deno.execPath(),
      inRoot(runCommand("examples/use_consumer.ts", name)),
    );
    // The producer's connect() waits up to 5 s for the consumer's name to appear.
    await using producer = new Child(
      Deno.execPath(),
      inRoot(runCommand("examples/use_producer.ts", name)),
    );
    for (let i = 0; i < 3; i++) {
      assert.match(await consumer.line(/^\d+ /), new RegExp(`^${i} \\{ pts: ${i} \\} ${i}$`));
    }
    consumer.process.kill("SIGKILL");
    await producer.line("the consumer went away");
    const status = await producer.exit();
    assert.equal(status.code, 0, producer.stderr);
    assert.doesNotMatch(producer.stderr, /Uncaught|PeerClosedError/);
  },
});

Deno.test({
  name: "examples: the publish/subscribe snippets run as written; subscribers come and go",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("usepub");
    const inRoot = (args: string[]) =>
      args.map((a) => a.startsWith("examples/") ? `${root}${a}` : a);
    const subscriber = () =>
      new Child(Deno.execPath(), inRoot(runCommand("examples/use_subscriber.ts", name)));
    // The subscriber first: subscribe() waits up to 5 s for the name.
    await using first = subscriber();
    await using publisher = new Child(
      Deno.execPath(),
      inRoot(runCommand("examples/use_publisher.ts", name)),
    );
    const line = /^(\d+) \{ pts: (\d+) \}$/;
    for (let i = 0; i < 3; i++) {
      const [, sequence, pts] = line.exec(await first.line(line))!;
      assert.equal(sequence, pts, "the publisher's counter is the frame's sequence");
    }
    first.process.kill("SIGKILL");
    await using second = subscriber();
    await second.line(line);
    const alive = await Promise.race([
      publisher.process.status.then(() => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 200)),
    ]);
    assert.ok(alive, `the publisher died when a subscriber went away:\n${publisher.stderr}`);
    publisher.process.kill("SIGTERM");
    await second.line("the publisher went away");
    assert.equal((await second.exit()).code, 0, second.stderr);
  },
});
