/**
 * Where the other runtimes are, for the tests and benchmarks that run the
 * library under Node and Bun: `SURFACEPORT_NODE` / `SURFACEPORT_BUN`, else
 * `./.rt` (where `.ci/run` installs them from npm), else `/opt/rt`, else
 * `PATH`. A runtime that is missing (or a Node older than 26) is
 * `undefined`.
 *
 * @module
 */

/** This checkout's root directory (with a trailing slash). */
export const repositoryRoot: string = new URL("../", import.meta.url).pathname;

/** A runtime that can run this checkout's TypeScript. */
export interface RuntimeBinary {
  /** `"deno"`, `"node"` or `"bun"`. */
  name: "deno" | "node" | "bun";
  /** The executable. */
  path: string;
  /** What it prints for `--version`. */
  version: string;
  /** The command line that runs `script` with `args` (FFI and files allowed). */
  command(script: string, args: string[]): [string, string[]];
}

function versionOf(path: string): string | undefined {
  try {
    const output = new Deno.Command(path, { args: ["--version"], stdout: "piped", stderr: "null" })
      .outputSync();
    return output.success ? new TextDecoder().decode(output.stdout).trim() : undefined;
  } catch {
    return undefined; // not there
  }
}

function find(name: "node" | "bun"): { path: string; version: string } | undefined {
  const override = Deno.env.get(`SURFACEPORT_${name.toUpperCase()}`);
  const candidates = override ? [override] : [
    `${repositoryRoot}.rt/node_modules/.bin/${name}`,
    `/opt/rt/node_modules/.bin/${name}`,
    name,
  ];
  for (const path of candidates) {
    const version = versionOf(path);
    if (version === undefined) continue;
    if (name === "node" && Number(/^v(\d+)/.exec(version)?.[1] ?? 0) < 26) continue;
    return { path, version };
  }
  return undefined;
}

const found = { node: find("node"), bun: find("bun") };

/** Deno (this process), Node and Bun, when present. */
export const runtimes: Record<"deno" | "node" | "bun", RuntimeBinary | undefined> = {
  deno: {
    name: "deno",
    path: Deno.execPath(),
    version: Deno.version.deno,
    command: (script, args) => [Deno.execPath(), ["run", "-A", script, ...args]],
  },
  node: found.node && {
    name: "node",
    ...found.node,
    command: (script, args) => [found.node!.path, ["--no-warnings", script, ...args]],
  },
  bun: found.bun && {
    name: "bun",
    ...found.bun,
    command: (script, args) => [found.bun!.path, [script, ...args]],
  },
};
