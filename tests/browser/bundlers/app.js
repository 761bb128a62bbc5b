// The app both bundlers build (copied to vite/src/main.js and webpack/src/index.js): the package used as
// pkg/README.md shows, with nothing bundler-specific. tests/browser/bundlers.mjs calls window.runBundlerTest
// in the production build and checks that each engine generated tokens.
import { createEngine, createWorkerEngine } from "webgpu-llm";

async function generate(makeEngine, prompt, maxTokens) {
  const t = performance.now();
  try {
    const engine = await makeEngine();
    const ids = [];
    let text = "";
    const stream = engine.generate(prompt, { maxTokens });
    for await (const chunk of stream) {
      ids.push(chunk.tokenId);
      text += chunk.text;
    }
    const result = await stream.result;
    await engine.unload();
    return { ok: true, ids, text, completionTokens: result.completionTokens, finishReason: result.finishReason, ms: Math.round(performance.now() - t) };
  } catch (e) {
    return { ok: false, error: `${e?.code ?? e?.name}: ${e?.message}`, ms: Math.round(performance.now() - t) };
  }
}

window.runBundlerTest = async ({ model, prompt, maxTokens }) => ({
  // The engine on the page.
  page: await generate(() => createEngine({ model }), prompt, maxTokens),
  // The engine in the worker the package starts itself.
  worker: await generate(() => createWorkerEngine({ model }), prompt, maxTokens),
  // The engine in a worker the app creates from "webgpu-llm/worker" (pkg/README.md's bundler form).
  appWorker: await generate(
    () => createWorkerEngine({ model, worker: new Worker(new URL("webgpu-llm/worker", import.meta.url), { type: "module" }) }),
    prompt,
    maxTokens,
  ),
});
window.bundlerTestReady = true;
