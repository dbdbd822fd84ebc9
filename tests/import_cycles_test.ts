/**
 * The module graph of `src/` has no import circle (type-only imports
 * included): `deno info --json mod.ts`, then a depth-first search over every
 * module under `src/`.
 */

import assert from "node:assert/strict";

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Every import cycle among `src/` modules reachable from mod.ts, each as a path of files. */
async function sourceCycles(): Promise<string[][]> {
  const root = new URL("../", import.meta.url);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("mod.ts", root).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as { modules: InfoModule[] };
  const src = new URL("src/", root).href;
  const graph = new Map<string, string[]>();
  for (const module of info.modules) {
    if (!module.specifier.startsWith(src)) continue;
    const targets = (module.dependencies ?? [])
      .flatMap((d) => [d.code?.specifier, d.type?.specifier])
      .filter((s): s is string => s !== undefined && s.startsWith(src));
    graph.set(module.specifier, [...new Set(targets)]);
  }
  assert.ok(graph.size > 20, `expected the whole of src/ in the graph, got ${graph.size} files`);
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        cycles.push([...path.slice(path.indexOf(next)), next].map((s) => s.slice(src.length)));
      } else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return cycles;
}

Deno.test("layout: no import circle among the modules of src/", async () => {
  const cycles = await sourceCycles();
  assert.deepEqual(cycles, [], `import circles:\n${cycles.map((c) => c.join(" → ")).join("\n")}`);
});

/**
 * Each folder of `src/` sits on a floor and imports only from folders on lower
 * floors (or from itself), so every arrow points down: see README "Layout".
 */
const FLOORS: Record<string, number> = {
  "core": 0,
  "ffi": 1, // the runtime seam and symbol tables: uses core only
  "wire": 2,
  "contract": 2,
  "linux": 3,
  "darwin": 3,
  "platform.ts": 4, // the switch: which backend this process uses
  "surface": 5,
  "gst": 6,
  "channel": 7,
  "pubsub": 8,
};
/** The platform-neutral folders: they never import a backend. */
const NEUTRAL = new Set(["core", "wire", "contract", "surface", "channel", "pubsub"]);

/** `src/a/b.ts` → `a`, `src/platform.ts` → `platform.ts`, `ffi/x.ts` → `ffi`. */
function folderOf(path: string): string {
  const parts = path.split("/");
  if (parts[0] === "ffi") return "ffi";
  return parts.length > 2 ? parts[1] : parts[1];
}

Deno.test("layout: every import in src/ and ffi/ points to a lower floor, and neutral code never imports a backend", async () => {
  const root = new URL("../", import.meta.url);
  const violations: string[] = [];
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(new URL(dir, root))) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory) await walk(`${path}/`);
      else if (entry.name.endsWith(".ts")) files.push(path);
    }
  };
  await walk("src/");
  await walk("ffi/");
  assert.ok(files.length > 40, `expected all of src/ and ffi/, got ${files.length} files`);
  for (const file of files) {
    const from = folderOf(file);
    assert.ok(from in FLOORS, `${file}: folder ${from} has no floor: add it to FLOORS`);
    const text = await Deno.readTextFile(new URL(file, root));
    for (const match of text.matchAll(/^(import|export)( type)? [^;]*? from "(\.[^"]+)"/gms)) {
      const typeOnly = match[2] !== undefined;
      const target = new URL(match[3], new URL(file, root)).href.slice(root.href.length);
      const to = folderOf(target);
      if (!(to in FLOORS)) {
        violations.push(`${file} imports ${target}, outside src/ and ffi/`);
        continue;
      }
      if (to !== from && FLOORS[to] >= FLOORS[from]) {
        violations.push(
          `${file} (${from}, floor ${FLOORS[from]}) imports ${target} (floor ${FLOORS[to]})`,
        );
      }
      // surface.ts names the macOS PixelBuffer type in its public signatures, and nothing else.
      const allowed = typeOnly && file === "src/surface/surface.ts" &&
        target === "src/darwin/pixel_buffer.ts";
      if (NEUTRAL.has(from) && (to === "linux" || to === "darwin") && !allowed) {
        violations.push(`${file} is platform-neutral but imports the backend file ${target}`);
      }
    }
  }
  assert.deepEqual(violations, [], violations.join("\n"));
});
