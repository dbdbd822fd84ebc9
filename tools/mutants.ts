/**
 * `deno task mutants`: applies each mutation of `tools/mutants_list.ts`, one
 * at a time, to a scratch copy of the checkout (the tracked files, copied
 * once into a temporary directory), runs only the test files its row names,
 * and fails if any mutation survives (the named tests still pass), if a row's
 * text no longer occurs exactly once in its file (the code moved: update the
 * list), or if a mutated run failed without a failing test (a load error
 * says nothing about the tests) or did not finish within `--timeout`.
 *
 * ```sh
 * deno task mutants                  # every row, one at a time
 * deno task mutants --jobs 2         # two rows at a time (one scratch copy each)
 * deno task mutants --only a,b       # the rows with these ids
 * deno task mutants --since main     # the rows whose file or tests differ from main
 * deno task mutants --check          # only validate the list (fast; also a test)
 * ```
 *
 * @module
 */

import { type Edit, type Mutant, MUTANTS } from "./mutants_list.ts";

/** The checkout this file belongs to. */
export const REPO_ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The permissions of `deno task test`, so the named test files run as in the suite. */
const TEST_FLAGS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  // All of net, as the suite has: Deno asks for net access to "unix:<path>" to listen on or
  // connect to a Unix socket (the doorbell, the allocation tests' bare reads). With
  // --allow-net=127.0.0.1 the test process had no doorbell, and the doorbell's rows were "killed"
  // by that, whatever they mutated.
  "--allow-net",
  // node:inspector, for the allocation tests' sampled allocation. Deno 2.9.6 asks for sys access
  // to "inspector" but rejects --allow-sys=inspector ("unknown sys descriptor"): all of sys.
  "--allow-sys",
  "--v8-flags=--expose-gc",
  // The mutated copy is type-checked by nobody: a mutation is a behaviour change, and checking
  // the whole graph again for each one would cost more than the tests.
  "--no-check",
];

/** How many times `needle` occurs in `haystack` (overlapping occurrences counted). */
export function occurrences(haystack: string, needle: string): number {
  if (needle.length === 0) return Infinity;
  let count = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + 1)) count++;
  return count;
}

/**
 * Every way `list` does not fit the checkout at `root`: a duplicate id, a
 * missing file, a `find` text that does not occur exactly once (the code
 * moved: the row must be updated), a replacement equal to the text, a named
 * test file that does not exist, a filter no named test file mentions.
 * Empty if the list is usable.
 */
export function checkMutantList(root: string, list: readonly Mutant[] = MUTANTS): string[] {
  const problems: string[] = [];
  const ids = new Set<string>();
  const sites = new Map<string, string>();
  const read = (path: string): string | undefined => {
    try {
      return Deno.readTextFileSync(`${root}/${path}`);
    } catch {
      return undefined;
    }
  };
  for (const row of list) {
    const where = `mutation ${row.id}`;
    if (!/^[a-z0-9][a-z0-9-]*$/.test(row.id)) problems.push(`${where}: id must be kebab-case`);
    if (ids.has(row.id)) problems.push(`${where}: the id is used twice`);
    ids.add(row.id);
    const edits = editsOf(row);
    const site = `${row.file}\0${row.find.trim()}`;
    const same = sites.get(site);
    if (same !== undefined) problems.push(`${where}: changes the same text as ${same}`);
    sites.set(site, row.id);
    if (edits.some((edit) => edit.find === edit.replace)) {
      problems.push(`${where}: a replacement changes nothing`);
    }
    if (!row.why.trim()) problems.push(`${where}: say why this mutation matters`);
    const source = read(row.file);
    if (source === undefined) {
      problems.push(`${where}: ${row.file} does not exist (the code moved: update the list)`);
    } else {
      for (const edit of edits) {
        const count = occurrences(source, edit.find);
        if (count !== 1) {
          problems.push(
            `${where}: its text occurs ${count} times in ${row.file}, not once ` +
              `(the code moved: update the list): ${JSON.stringify(edit.find)}`,
          );
        }
      }
    }
    if (row.tests.length === 0) problems.push(`${where}: names no test file`);
    const testSources: string[] = [];
    for (const test of row.tests) {
      const text = read(test);
      if (text === undefined) problems.push(`${where}: test file ${test} does not exist`);
      else testSources.push(text);
    }
    if (
      row.filter !== undefined && testSources.length === row.tests.length &&
      !testSources.some((text) => text.includes(row.filter!))
    ) {
      problems.push(
        `${where}: no named test file mentions the filter ${JSON.stringify(row.filter)}`,
      );
    }
  }
  return problems;
}

/** The row's edits: its own `find`/`replace`, then `also`. */
function editsOf(row: Mutant): Edit[] {
  return [{ find: row.find, replace: row.replace }, ...(row.also ?? [])];
}

/**
 * `source` with every edit of `row` applied, or undefined if one of its
 * texts does not occur exactly once (in the source as edited so far).
 */
export function applyMutant(source: string, row: Mutant): string | undefined {
  let text = source;
  for (const edit of editsOf(row)) {
    if (occurrences(text, edit.find) !== 1) return undefined;
    text = text.replace(edit.find, () => edit.replace);
  }
  return text;
}

/** What running one mutation's tests showed. */
export interface Outcome {
  row: Mutant;
  /** killed: a named test failed; survived: they all passed; error: the run failed otherwise. */
  verdict: "killed" | "survived" | "error";
  seconds: number;
  /** The tail of the test output, for survivors and errors. */
  detail: string;
}

/** The tracked files of the checkout at `root` (as they are in the working tree). */
async function trackedFiles(root: string): Promise<string[]> {
  const output = await new Deno.Command("git", {
    args: ["ls-files", "-z"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`git ls-files failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return new TextDecoder().decode(output.stdout).split("\0").filter((path) => path !== "");
}

/** Copies the tracked files of `root` into a new temporary directory; returns its path. */
/** Scratch copies not removed yet (removed on Ctrl-C too). */
const scratchDirs = new Set<string>();
/** Process groups of the test runs under way (timeout(1) leads a group of its own). */
const runningGroups = new Set<number>();

async function scratchCopy(root: string, files: string[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "surfaceport-mutants-" });
  scratchDirs.add(dir);
  for (const file of files) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(`${root}/${file}`);
    } catch {
      continue; // deleted in the working tree
    }
    const target = `${dir}/${file}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    if (info.isSymlink) await Deno.symlink(await Deno.readLink(`${root}/${file}`), target);
    else await Deno.copyFile(`${root}/${file}`, target);
  }
  return dir;
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Applies `row` in the scratch copy `dir`, runs its tests, restores the file. */
async function runMutant(dir: string, row: Mutant, timeoutSeconds: number): Promise<Outcome> {
  const path = `${dir}/${row.file}`;
  const original = await Deno.readTextFile(path);
  const mutated = applyMutant(original, row);
  if (mutated === undefined) {
    return {
      row,
      verdict: "error",
      seconds: 0,
      detail:
        `its text does not occur exactly once in ${row.file}: the code moved, update the list`,
    };
  }
  const started = performance.now();
  await Deno.writeTextFile(path, mutated);
  try {
    const args = [
      "-k",
      "10",
      String(timeoutSeconds),
      Deno.execPath(),
      "test",
      ...TEST_FLAGS,
      ...(row.filter !== undefined ? ["--filter", row.filter] : []),
      ...row.tests,
    ];
    // timeout(1) puts the run in a process group of its own and kills the whole group, so the
    // peers a hung test spawned go too.
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("timeout", {
        args,
        cwd: dir,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new Error("mutants: timeout(1) (GNU coreutils) is needed to bound each test run");
    }
    runningGroups.add(child.pid);
    const output = await child.output().finally(() => runningGroups.delete(child.pid));
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    const seconds = (performance.now() - started) / 1000;
    if (output.code === 124 || output.code === 137) {
      // Neither a kill nor a survival: every test has timeouts of its own, so a run this long
      // hung (or --timeout is too short for it).
      return {
        row,
        verdict: "error",
        seconds,
        detail: `the tests did not finish within ${timeoutSeconds} s (stopped): a hang, or raise ` +
          `--timeout\n${tail(text, 12)}`,
      };
    }
    const summary = /^(ok|FAILED) \| (\d+) passed \| (\d+) failed/m.exec(text);
    if (output.success) {
      const passed = summary ? Number(summary[2]) : NaN;
      const note = passed === 0
        ? "no test ran (a filter that matches nothing, or every test ignored here)\n"
        : "";
      return { row, verdict: "survived", seconds, detail: note + tail(text, 12) };
    }
    if (summary && summary[1] === "FAILED" && Number(summary[3] ?? 0) > 0) {
      const failed = [...text.matchAll(/^(.+) => \.?\/?tests\/\S+:\d+:\d+$/gm)]
        .map((m) => m[1].trim());
      const names = [...new Set(failed)];
      const detail = names.length === 0
        ? "an uncaught error"
        : names.slice(0, 2).join("; ") + (names.length > 2 ? `; and ${names.length - 2} more` : "");
      return { row, verdict: "killed", seconds, detail };
    }
    return { row, verdict: "error", seconds, detail: tail(text, 30) };
  } finally {
    await Deno.writeTextFile(path, original);
  }
}

/** Runs `rows` on `jobs` scratch copies of `root`; reports each outcome as it comes. */
export async function runMutants(
  root: string,
  rows: readonly Mutant[],
  options: { jobs: number; timeoutSeconds: number; report: (outcome: Outcome) => void },
): Promise<Outcome[]> {
  const files = await trackedFiles(root);
  const queue = [...rows];
  const outcomes: Outcome[] = [];
  const worker = async () => {
    if (queue.length === 0) return;
    const dir = await scratchCopy(root, files);
    try {
      for (let row = queue.shift(); row !== undefined; row = queue.shift()) {
        const outcome = await runMutant(dir, row, options.timeoutSeconds);
        outcomes.push(outcome);
        options.report(outcome);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
      scratchDirs.delete(dir);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.jobs) }, worker));
  return outcomes;
}

/** The files that differ between `ref` and the working tree of `root` (committed or not). */
async function changedSince(root: string, ref: string): Promise<Set<string>> {
  const output = await new Deno.Command("git", {
    args: ["diff", "--name-only", ref, "--"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`git diff ${ref} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return new Set(new TextDecoder().decode(output.stdout).split("\n").filter((l) => l !== ""));
}

function option(name: string): string | undefined {
  const at = Deno.args.indexOf(name);
  return at >= 0 ? Deno.args[at + 1] : undefined;
}

if (import.meta.main) {
  const problems = checkMutantList(REPO_ROOT);
  if (problems.length > 0) {
    console.error(`mutants: the list does not fit the code:\n  ${problems.join("\n  ")}`);
    Deno.exit(1);
  }
  if (Deno.args.includes("--check")) {
    console.log(`mutants: ${MUTANTS.length} rows, every text occurs exactly once`);
    Deno.exit(0);
  }
  const only = option("--only")?.split(",");
  let rows = only ? MUTANTS.filter((row) => only.includes(row.id)) : MUTANTS;
  const since = option("--since");
  if (since !== undefined) {
    const changed = await changedSince(REPO_ROOT, since);
    rows = rows.filter((row) => [row.file, ...row.tests].some((file) => changed.has(file)));
  }
  if (only && rows.length !== only.length) {
    const unknown = only.filter((id) => !MUTANTS.some((row) => row.id === id));
    console.error(`mutants: no row with id ${unknown.join(", ")}`);
    Deno.exit(2);
  }
  const jobs = Number(option("--jobs") ?? 1);
  const timeoutSeconds = Number(option("--timeout") ?? 240);
  if (!Number.isInteger(jobs) || jobs < 1 || !(timeoutSeconds > 0)) {
    console.error(
      "usage: deno task mutants [--jobs N] [--only id,id] [--since REF] [--timeout S] [--check]",
    );
    Deno.exit(2);
  }
  // Ctrl-C reaches this process only: timeout(1) put each test run in a group of its own.
  Deno.addSignalListener("SIGINT", () => {
    for (const group of runningGroups) {
      try {
        Deno.kill(-group, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const dir of scratchDirs) {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch (error) {
        console.error(`mutants: could not remove ${dir}: ${error}`);
      }
    }
    Deno.exit(130);
  });
  const started = performance.now();
  console.log(`mutants: ${rows.length} mutations, ${jobs} at a time`);
  const outcomes = await runMutants(REPO_ROOT, rows, {
    jobs,
    timeoutSeconds,
    report: (o) => {
      const head = `${o.verdict.padEnd(8)} ${o.seconds.toFixed(1).padStart(6)} s  ${o.row.id}`;
      console.log(o.verdict === "killed" ? `${head}  (${o.detail})` : `${head}\n${o.detail}`);
    },
  });
  const bad = outcomes.filter((o) => o.verdict !== "killed");
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `mutants: ${outcomes.length - bad.length} of ${outcomes.length} killed in ${
      seconds.toFixed(0)
    } s`,
  );
  if (bad.length > 0) {
    for (const o of bad) {
      console.error(
        `mutants: ${o.verdict}: ${o.row.id} (${o.row.file}; ${o.row.tests.join(" ")}${
          o.row.filter ? ` --filter ${JSON.stringify(o.row.filter)}` : ""
        }): ${o.row.why}`,
      );
    }
    Deno.exit(1);
  }
}
