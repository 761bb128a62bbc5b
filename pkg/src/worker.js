// The worker side of createWorkerEngine: a dedicated module worker that owns the wasm engine. The page
// sends small requests and gets small replies (progress events, tokens, results, errors as plain
// {code, message, ...details}); the worker fetches and caches the model itself.
//
// Protocol (every request but "abort"/"cancel" carries an `id` and gets "done" or "error" back):
//   page → worker  {type: "load", id, options, progress}   {type: "generate", id, input, options}
//                  {type: "call", id, method, args}        {type: "abort"}   {type: "cancel", id}
//   worker → page  {type: "progress", id, event}  {type: "event", id, event}
//                  {type: "done", id, value}      {type: "error", id, error}
// Usable as is: new Worker(new URL("webgpu-llm/worker", import.meta.url), { type: "module" }).

import { LocalCore } from "./core.js";
import { BadRequestError, errorToJSON } from "./errors.js";

const CALLS = new Set(["resetChat", "unload", "encode", "decode", "applyChatTemplate", "wasmMemoryBytes", "embed"]);

let core = null;
const controllers = new Map(); // request id → AbortController

self.addEventListener("message", (ev) => {
  const msg = ev.data ?? {};
  if (msg.type === "abort") {
    core?.abort();
  } else if (msg.type === "cancel") {
    controllers.get(msg.id)?.abort();
  } else {
    handle(msg);
  }
});

async function handle(msg) {
  const { id } = msg;
  const ac = new AbortController();
  controllers.set(id, ac);
  try {
    let value;
    if (msg.type === "load") {
      if (core) {
        core.unload();
        core = null;
      }
      const onProgress = msg.progress ? (event) => self.postMessage({ type: "progress", id, event }) : undefined;
      core = await LocalCore.create(msg.options, { onProgress, signal: ac.signal });
      value = core.info;
    } else if (!core) {
      throw new BadRequestError("no model is loaded in this worker; create the engine again");
    } else if (msg.type === "generate") {
      const onEvent = (event) => self.postMessage({ type: "event", id, event });
      value = await core.generate(msg.input, msg.options, onEvent, ac.signal);
    } else if (msg.type === "call" && CALLS.has(msg.method)) {
      value = await core[msg.method](...(msg.args ?? []));
      if (msg.method === "unload") core = null;
    } else {
      throw new BadRequestError(`unknown worker request ${JSON.stringify(msg.type)}`);
    }
    self.postMessage({ type: "done", id, value });
  } catch (err) {
    self.postMessage({ type: "error", id, error: errorToJSON(err) });
  } finally {
    controllers.delete(id);
  }
}
