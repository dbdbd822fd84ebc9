/**
 * `surfaceport preview NAME [--port N]`: serves a page on 127.0.0.1 that
 * shows the live stream. Frames are converted to RGBA here (downscaled to
 * at most `--max-width` pixels wide) and pushed over a WebSocket, one in
 * flight at a time: the page asks for the next one after drawing, so a slow
 * page never makes frames pile up, and the stream's own numbers (frames/s,
 * latency, drops) are measured on every received frame regardless.
 *
 * Who may look: every other local user can connect to 127.0.0.1, and
 * headers are theirs to forge. So the server makes a random token at start
 * and prints it only in its URL (as notebook servers do); every HTTP and
 * WebSocket request must carry it, in the query or in the cookie the first
 * page load sets, compared in constant time. Without it every path answers
 * the same 403. With it, the page is shown only names that `list()` shows
 * this user (and the one named on the command line), and a name is answered
 * from that list alone: nothing about the file system leaks through it.
 *
 * What a page can cost: at most {@link MAX_SESSIONS} pages stream at once;
 * a frame is sent only while the previous one left the server
 * (`bufferedAmount` is 0), so a page that never reads holds at most one
 * frame here (and what the kernel's socket buffers take), and after
 * {@link STALL_MS} without taking it the page is disconnected.
 *
 * @module
 */

import { type Frame, TimeoutError, toRGBA } from "../mod.ts";
import {
  type Command,
  type CommandIO,
  integerOption,
  parseCommandArgs,
  UsageError,
} from "./command.ts";
import { PREVIEW_PAGE } from "./preview_page.ts";
import { isEndOfStream, listEndpoints, openStream, type Stream } from "./source.ts";
import { metaText, StreamStats } from "./stats.ts";

interface PreviewOptions {
  maxWidth: number;
  maxFps: number;
}

/** Most pages streaming at once: each holds a subscription and a frame's worth of memory. */
export const MAX_SESSIONS = 4;
/** A page that has not taken a frame the server sent for this long is disconnected (ms). */
export const STALL_MS = 10_000;
/** Status messages are skipped while more than this is waiting to go to a page (bytes). */
const TEXT_BACKLOG = 64 * 1024;

/** A fresh secret for one preview server: 32 random bytes, base64url. */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

const textEncoder = new TextEncoder();

/** True if `given` is `secret`, in time that depends only on their lengths. */
export function sameSecret(given: string, secret: string): boolean {
  const a = textEncoder.encode(given);
  const b = textEncoder.encode(secret);
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a[i] ?? 0) ^ b[i];
  return difference === 0;
}

/** The cookie that carries the token after the first page load (cookies ignore the port). */
function cookieName(port: number): string {
  return `surfaceport-preview-${port}`;
}

/** The token a request carries: in its query, else in its cookie. */
function tokenOf(request: Request, url: URL, port: number): string {
  const query = url.searchParams.get("token");
  if (query !== null) return query;
  const prefix = `${cookieName(port)}=`;
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const cookie = part.trim();
    if (cookie.startsWith(prefix)) return cookie.slice(prefix.length);
  }
  return "";
}

/**
 * The answer to a request without this server's token: the same for every
 * path, so nothing is learnt from it.
 */
function refuseWithoutToken(request: Request, url: URL, port: number, token: string) {
  if (sameSecret(tokenOf(request, url, port), token)) return undefined;
  return new Response(
    "refused: open the link `surfaceport preview` printed (it carries this server's token)",
    { status: 403 },
  );
}

/** The output size for a `width` x `height` frame at most `maxWidth` wide. */
export function previewSize(width: number, height: number, maxWidth: number): [number, number] {
  if (width <= maxWidth) return [width, height];
  return [maxWidth, Math.max(1, Math.round((height * maxWidth) / width))];
}

/**
 * The page shows private frames, and any web page the user visits can open
 * a WebSocket to 127.0.0.1 (WebSockets are not bound by the same-origin
 * policy) or rebind a domain name of its own to 127.0.0.1. So only requests
 * addressed to this server by its loopback name are served, and a WebSocket
 * only from a page of this server (its `Origin`).
 */
export function refuseForeign(request: Request, url: URL, port: number): Response | undefined {
  const host = request.headers.get("host") ?? "";
  const own = [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
  if (!own.includes(host)) {
    return new Response(`refused: Host ${JSON.stringify(host)} is not this preview server`, {
      status: 403,
    });
  }
  const origin = request.headers.get("origin");
  if (url.pathname === "/ws" && origin !== `http://${host}`) {
    return new Response(`refused: a WebSocket from ${origin ?? "no origin"}`, { status: 403 });
  }
  return undefined;
}

/**
 * Streams `name` to one page over `socket` until either side goes. A frame
 * goes out only when the page asked for one and the previous one has left
 * (`bufferedAmount` 0); a page that keeps one waiting for {@link STALL_MS}
 * is disconnected. `onEnd` runs once, when the session is over.
 */
function session(
  socket: WebSocket,
  name: string,
  options: PreviewOptions,
  io: CommandIO,
  onEnd: () => void,
): void {
  const done = new AbortController();
  const abort = () => done.abort();
  io.signal.addEventListener("abort", abort, { once: true });
  let credits = 1;
  let lastSent = 0;
  let waitingSince = 0; // when a frame was first held back because the last one had not left
  const encoder = new TextEncoder();
  const sendText = (value: unknown) => {
    if (socket.readyState === WebSocket.OPEN && socket.bufferedAmount <= TEXT_BACKLOG) {
      socket.send(JSON.stringify(value));
    }
  };
  /** False while the last frame is still on its way; closes the page after STALL_MS of that. */
  const drained = (now: number): boolean => {
    if (socket.bufferedAmount === 0) {
      waitingSince = 0;
      return true;
    }
    if (waitingSince === 0) waitingSince = now;
    else if (now - waitingSince > STALL_MS) socket.close(1008, "the page stopped reading");
    return false;
  };
  socket.onmessage = (event) => {
    if (event.data === "ready") credits = Math.min(credits + 1, 2);
  };
  socket.onclose = abort;
  const run = async () => {
    await new Promise<void>((resolve) => {
      if (socket.readyState === WebSocket.OPEN) resolve();
      else socket.addEventListener("open", () => resolve(), { once: true });
    });
    let stream: Stream;
    try {
      stream = await openStream(name, { timeout: 5000, signal: done.signal });
    } catch (error) {
      if (!done.signal.aborted) {
        sendText({ error: `cannot open ${name}: ${(error as Error).message}` });
        socket.close();
      }
      return;
    }
    try {
      sendText({ producer: stream.producer ? `pid ${stream.producer.pid}` : "?" });
      const stats = new StreamStats();
      let rgba = new Uint8Array(0);
      for (;;) {
        let frame: Frame;
        try {
          frame = await stream.receive({ timeout: 500, signal: done.signal });
        } catch (error) {
          if (error instanceof TimeoutError) {
            drained(performance.now());
            stats.extraDrops = stream.dropped;
            sendText({
              stats: { ...stats.report(500), metaText: metaText(stats.report(500).meta) },
            });
            continue;
          }
          if (isEndOfStream(error)) sendText({ ended: true });
          return;
        }
        try {
          stats.add(frame);
          const now = performance.now();
          if (credits > 0 && now - lastSent >= 1000 / options.maxFps && drained(now)) {
            credits--;
            lastSent = now;
            const { width, height } = frame.surface;
            const [w, h] = previewSize(width, height, options.maxWidth);
            if (rgba.length !== w * h * 4) rgba = new Uint8Array(w * h * 4);
            toRGBA(frame, { into: rgba, width: w, height: h });
            stats.extraDrops = stream.dropped;
            const report = stats.report(500);
            const header = encoder.encode(JSON.stringify({
              width: w,
              height: h,
              stats: { ...report, metaText: metaText(report.meta) },
            }));
            const message = new Uint8Array(4 + header.length + rgba.length);
            new DataView(message.buffer).setUint32(0, header.length, true);
            message.set(header, 4);
            message.set(rgba, 4 + header.length);
            if (socket.readyState === WebSocket.OPEN) socket.send(message);
          }
        } finally {
          frame.close();
        }
      }
    } finally {
      stream.close();
    }
  };
  run().catch((error) => sendText({ error: String(error) })).finally(() => {
    io.signal.removeEventListener("abort", abort);
    if (socket.readyState === WebSocket.OPEN) socket.close();
    onEnd();
  });
}

/** `preview NAME [--port N] [--max-width W] [--max-fps N]`. */
export const preview: Command = {
  summary: "a live view of a stream in the browser (serves 127.0.0.1)",
  usage: [
    "usage: surfaceport preview [NAME] [--port N] [--max-width W] [--max-fps N]",
    "",
    "Serves a page on http://127.0.0.1:N/ that shows NAME live with its frames/s,",
    "latency, drops and the producer's pool as this consumer sees it; the page can",
    "switch to any name `surfaceport list` shows. Ends on Ctrl-C. Open the link it",
    "prints: it carries a random token, and without it every request is refused",
    "(other local users can reach 127.0.0.1 too).",
    "  --port N       port to listen on (default 8470; 0 picks a free one)",
    "  --max-width W  downscale frames wider than W pixels for the page (default 960)",
    "  --max-fps N    send the page at most N frames per second (default 30)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      port: "string",
      "max-width": "string",
      "max-fps": "string",
    });
    if (positionals.length > 1) throw new UsageError("preview takes at most one NAME");
    const initial = positionals[0] ?? "";
    const port = integerOption(values, "port", 8470, 65535);
    const options = {
      maxWidth: Math.max(16, integerOption(values, "max-width", 960, 32768)),
      maxFps: Math.max(1, integerOption(values, "max-fps", 30, 1000)),
    };
    const token = newToken();
    let sessions = 0;
    const listening = Promise.withResolvers<number>();
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port,
      signal: io.signal,
      onListen: (address) => listening.resolve(address.port),
    }, async (request) => {
      const url = new URL(request.url);
      const actual = await listening.promise;
      const refusal = refuseForeign(request, url, actual) ??
        refuseWithoutToken(request, url, actual, token);
      if (refusal) return refusal;
      if (url.pathname === "/") {
        if (url.searchParams.has("token") || (!url.searchParams.has("name") && initial)) {
          // The token moves into a cookie and out of the address bar (and the history).
          const next = new URL(url);
          next.searchParams.delete("token");
          if (!next.searchParams.has("name") && initial) next.searchParams.set("name", initial);
          return new Response(null, {
            status: 302,
            headers: {
              location: next.pathname + next.search,
              "set-cookie": `${
                cookieName(actual)
              }=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400`,
              "cache-control": "no-store",
            },
          });
        }
        return new Response(PREVIEW_PAGE, {
          headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
        });
      }
      if (url.pathname === "/api/list") return Response.json(await listEndpoints());
      if (url.pathname === "/ws") {
        const name = url.searchParams.get("name");
        if (!name || request.headers.get("upgrade") !== "websocket") {
          return new Response("a WebSocket with ?name=NAME", { status: 400 });
        }
        // Answered from list() alone: a path is never looked at, so existing and missing
        // files get the same answer.
        if (name !== initial && !(await listEndpoints()).some((e) => e.name === name)) {
          return new Response("not a stream of this user's that the preview shows", {
            status: 404,
          });
        }
        if (sessions >= MAX_SESSIONS) {
          return new Response(`busy: ${MAX_SESSIONS} pages are streaming already`, {
            status: 503,
          });
        }
        const { socket, response } = Deno.upgradeWebSocket(request);
        socket.binaryType = "arraybuffer";
        sessions++;
        session(socket, name, options, io, () => sessions--);
        return response;
      }
      return new Response("not found", { status: 404 });
    });
    const actual = await listening.promise;
    const query = new URLSearchParams({ token });
    if (initial) query.set("name", initial);
    await io.out(`preview: http://127.0.0.1:${actual}/?${query}  (Ctrl-C to stop)\n`);
    await server.finished;
    return 0;
  },
};
