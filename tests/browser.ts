/**
 * Headless Chromium for the preview test, driven over the DevTools protocol
 * (a WebSocket; no npm browser download). Killed and awaited on dispose.
 *
 * @module
 */

import { killedWithParent } from "../cli/gst_launch.ts";
import { removeDeadProcessesDirs } from "./helpers.ts";

/** The Chromium binary, or `undefined` with the reason it is missing. */
export function findChromium(): { path?: string; reason?: string } {
  for (const path of ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]) {
    try {
      if (Deno.statSync(path).isFile) return { path };
    } catch {
      // not there
    }
  }
  return {
    reason: "no Chromium at /usr/bin/chromium (install Debian's chromium package: " +
      "apt-get install -y chromium; .ci/run does when apt-get works)",
  };
}

/** A headless Chromium with one page open on `url`. */
export class Browser implements AsyncDisposable {
  readonly #process: Deno.ChildProcess;
  readonly #profile: string;
  #socket: WebSocket | undefined;
  #nextId = 1;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  #stderr = "";
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  private constructor(process: Deno.ChildProcess, profile: string) {
    this.#process = process;
    this.#profile = profile;
  }

  /** Launches Chromium on `url` and connects to its page (bounded by `ms`). */
  static async open(executable: string, url: string, ms = 30000): Promise<Browser> {
    // Named after this process: a profile whose test process was killed outright (no dispose
    // ran) is removed by the next test run.
    const profile = Deno.makeTempDirSync({ prefix: `surfaceport-chromium-${Deno.pid}-` });
    removeDeadProcessesDirs(profile.slice(0, profile.lastIndexOf("/")), "surfaceport-chromium-");
    // Chromium makes its singleton-socket directory (org.chromium.Chromium.*) in TMPDIR and
    // leaves it behind when killed: inside the profile, it goes with the profile.
    const tmp = `${profile}/tmp`;
    Deno.mkdirSync(tmp);
    // Killed with this test process too (a timeout's SIGKILL, a crash: no dispose runs), or
    // Chromium outlives the run under init. Its helpers go when the browser process dies.
    const [program, args] = killedWithParent(executable, [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--hide-scrollbars",
      "--disable-crash-reporter",
      "--disable-breakpad",
      "--force-device-scale-factor=1",
      "--window-size=1100,600",
      `--user-data-dir=${profile}`,
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      url,
    ]);
    const process = new Deno.Command(program, {
      env: { TMPDIR: tmp },
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const browser = new Browser(process, profile);
    try {
      const port = await browser.#devtoolsPort(ms);
      const end = performance.now() + ms;
      for (;;) {
        const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
          type: string;
          webSocketDebuggerUrl: string;
        }[];
        const page = targets.find((t) => t.type === "page");
        if (page) {
          await browser.#connect(page.webSocketDebuggerUrl);
          return browser;
        }
        if (performance.now() > end) throw new Error("Chromium opened no page");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } catch (error) {
      await browser[Symbol.asyncDispose]();
      throw error;
    }
  }

  async #devtoolsPort(ms: number): Promise<number> {
    const decoder = new TextDecoder();
    const reader = this.#process.stderr.getReader();
    this.#reader = reader;
    const timer = setTimeout(() => reader.cancel().catch(() => {}), ms);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          throw new Error(
            `Chromium exited or timed out before DevTools listened:\n${this.#stderr}`,
          );
        }
        this.#stderr += decoder.decode(value, { stream: true });
        const match = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(this.#stderr);
        if (match) {
          // Keep draining stderr so Chromium never blocks on a full pipe.
          (async () => {
            try {
              for (;;) {
                const next = await reader.read();
                if (next.done) return;
                this.#stderr += decoder.decode(next.value, { stream: true });
              }
            } catch {
              // cancelled at dispose
            }
          })();
          return Number(match[1]);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  #connect(url: string): Promise<void> {
    const socket = new WebSocket(url);
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      if (message.error) pending.reject(new Error(JSON.stringify(message.error)));
      else pending.resolve(message.result);
    };
    socket.onclose = () => {
      for (const pending of this.#pending.values()) pending.reject(new Error("DevTools closed"));
      this.#pending.clear();
    };
    return new Promise((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error(`cannot connect to DevTools at ${url}`));
    });
  }

  /** Sends a DevTools command and resolves to its result (bounded by `ms`). */
  send(method: string, params: Record<string, unknown> = {}, ms = 20000): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`DevTools ${method} timed out`));
      }, ms);
      this.#pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.#socket!.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates `expression` in the page and returns its value. */
  async evaluate(expression: string): Promise<unknown> {
    const result = await this.send("Runtime.evaluate", { expression, returnByValue: true }) as {
      result: { value: unknown };
    };
    return result.result.value;
  }

  /** A PNG screenshot of the page's viewport. */
  async screenshot(): Promise<Uint8Array> {
    const result = await this.send("Page.captureScreenshot", { format: "png" }) as { data: string };
    return Uint8Array.from(atob(result.data), (c) => c.charCodeAt(0));
  }

  /** What Chromium wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Closes the connection and Chromium — SIGTERM first, so it takes its
   * helper processes down and stops writing its profile; SIGKILL after 5 s —
   * awaits it and removes its profile.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#socket?.close();
    const signal = (name: Deno.Signal) => {
      try {
        this.#process.kill(name);
      } catch {
        // already exited
      }
    };
    signal("SIGTERM");
    const timer = setTimeout(() => signal("SIGKILL"), 5000);
    await this.#process.status;
    clearTimeout(timer);
    await (this.#reader ?? this.#process.stderr).cancel().catch(() => {});
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await Deno.remove(this.#profile, { recursive: true });
        return;
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
        await new Promise((resolve) => setTimeout(resolve, 100)); // a helper still writing
      }
    }
    console.warn(`could not remove Chromium's profile ${this.#profile}`);
  }
}
