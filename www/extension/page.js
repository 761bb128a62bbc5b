// Reading the page the user is looking at: `readPage` is injected into the tab with
// chrome.scripting.executeScript (no content script runs on pages the user never asks about), and
// returns plain data; the text never leaves the machine, it only goes to the local model.

/** Characters read from a page at most (the token budget cuts further; this bounds the message). */
export const MAX_PAGE_CHARS = 200_000;

/**
 * Runs inside the page (it must be self-contained: executeScript serializes the function's source).
 * Returns {title, url, lang, selection, text}: the visible text of the main content (`<article>`,
 * `<main>`, `[role=main]`, else `<body>`), whitespace collapsed, at most `maxChars` characters.
 */
export function readPage(maxChars) {
  const squeeze = (s) =>
    String(s ?? "")
      .replace(/[ \t\f\v\u00a0]+/g, " ")
      .replace(/ *\n\s*/g, "\n")
      .trim();
  const candidates = [...document.querySelectorAll("article, main, [role=main]")];
  // The biggest candidate with some substance; pages that wrap each teaser in <article> have a <main>.
  let root = document.body;
  let best = 0;
  for (const el of candidates) {
    const n = (el.innerText ?? "").length;
    if (n > best && n > 200) [root, best] = [el, n];
  }
  const text = squeeze(root?.innerText ?? document.documentElement?.innerText ?? "");
  return {
    title: squeeze(document.title),
    url: location.href,
    lang: document.documentElement?.lang || "",
    selection: squeeze(window.getSelection()?.toString() ?? "").slice(0, maxChars),
    text: text.slice(0, maxChars),
  };
}

/** Read `tabId`'s page; rejects with an Error whose message tells the user what to do. */
export async function readTab(tabId) {
  if (tabId == null) throw new Error("There is no active tab to read.");
  let results;
  try {
    results = await chrome.scripting.executeScript({ target: { tabId }, func: readPage, args: [MAX_PAGE_CHARS] });
  } catch (err) {
    throw new Error(explainScriptingError(String(err?.message ?? err)));
  }
  const page = results?.[0]?.result;
  if (!page) throw new Error("The page did not answer (it may still be loading, or it is not a web page). Try again.");
  return page;
}

function explainScriptingError(message) {
  if (/cannot be scripted|chrome:\/\/|chrome-extension:\/\/|edge:\/\/|about:|Cannot access a chrome/i.test(message)) {
    return "Chrome does not let extensions read this kind of page (browser pages, the Web Store, other extensions). Open a normal web page and ask again.";
  }
  if (/permission|Cannot access contents/i.test(message)) {
    return (
      "This extension may not read this tab yet. Click its toolbar button while this tab is shown (that grants " +
      "access to this tab only), or tick \u201cRead any page\u201d under Options."
    );
  }
  if (/No tab with id/i.test(message)) return "That tab was closed. Switch to the page you want to ask about.";
  return `Could not read the page: ${message}`;
}

/** Passages read for "Find by meaning" at most (each is embedded once per page). */
export const MAX_PASSAGES = 400;
/** Characters per passage at most: a few sentences, well under the embedding model's 256 tokens. */
export const PASSAGE_CHARS = 400;

/**
 * Runs inside the page (self-contained, like readPage). The main content's text, block by block
 * (paragraphs, list items, headings, cells), cut into passages of whole sentences of at most
 * `passageChars` characters. Without `marks` it returns `{title, url, passages: [{block, start, end,
 * text}]}` (offsets into the block's text nodes, `text` with whitespace collapsed). With `marks`
 * (`[{block, start, end, text}]`, best first) it highlights them with the CSS Custom Highlight API
 * (no change to the page's DOM but one <style>), scrolls the first into view and returns how many
 * it found (a passage whose text changed since it was read is skipped).
 */
export function findOnPage(maxPassages, passageChars, marks) {
  const squeeze = (s) => s.replace(/\s+/g, " ").trim();
  const candidates = [...document.querySelectorAll("article, main, [role=main]")];
  let root = document.body;
  let best = 0;
  for (const el of candidates) {
    const n = (el.innerText ?? "").length;
    if (n > best && n > 200) [root, best] = [el, n];
  }
  // Text nodes grouped by their nearest block-level ancestor, in document order.
  const blocks = [];
  const inline = new Set(["inline", "inline-block", "inline-flex", "contents"]);
  const blockOf = new Map();
  const walker = document.createTreeWalker(root ?? document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      const el = node.parentElement;
      if (!el || !node.data.trim() || el.closest("script, style, noscript, template, svg")) return NodeFilter.FILTER_REJECT;
      if (el.checkVisibility && !el.checkVisibility()) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let el = node.parentElement;
    while (el !== root && el.parentElement && inline.has(getComputedStyle(el).display)) el = el.parentElement;
    let b = blockOf.get(el);
    if (b !== blocks.length - 1) {
      // A block interrupted by another block's text (a nested list) goes on as a new group.
      b = blocks.length;
      blocks.push({ nodes: [], text: "" });
      blockOf.set(el, b);
    }
    blocks[b].nodes.push(node);
    blocks[b].text += node.data;
  }
  // Passages: whole sentences up to passageChars (a longer sentence is cut at a space).
  const passages = [];
  for (let b = 0; b < blocks.length && passages.length < maxPassages; b++) {
    const text = blocks[b].text;
    const sentences = [];
    const re = /[^.!?。！？]+(?:[.!?。！？]+|$)\s*/g;
    for (let m = re.exec(text); m && m[0]; m = re.exec(text)) sentences.push([m.index, m.index + m[0].length]);
    let start = null;
    let end = 0;
    const flush = () => {
      if (start !== null && squeeze(text.slice(start, end)).length >= 12 && passages.length < maxPassages) {
        passages.push({ block: b, start, end, text: squeeze(text.slice(start, end)) });
      }
      start = null;
    };
    for (let [s, e] of sentences) {
      while (e - s > passageChars) {
        flush();
        const cut = text.lastIndexOf(" ", s + passageChars);
        const stop = cut > s ? cut : s + passageChars;
        [start, end] = [s, stop];
        flush();
        s = stop;
      }
      if (start !== null && e - start > passageChars) flush();
      if (start === null) start = s;
      end = e;
    }
    flush();
  }
  if (!marks) return { title: squeeze(document.title), url: location.href, passages };

  // Highlight: map [start, end) of a block's text onto its text nodes.
  const point = (nodes, offset) => {
    for (const n of nodes) {
      if (offset <= n.data.length) return [n, offset];
      offset -= n.data.length;
    }
    const last = nodes.at(-1);
    return [last, last.data.length];
  };
  const ranges = [];
  for (const m of marks) {
    const block = blocks[m.block];
    if (!block || squeeze(block.text.slice(m.start, m.end)) !== m.text) continue;
    const range = document.createRange();
    range.setStart(...point(block.nodes, m.start));
    range.setEnd(...point(block.nodes, m.end));
    ranges.push(range);
  }
  if (!document.getElementById("webgpu-llm-find-style")) {
    const style = document.createElement("style");
    style.id = "webgpu-llm-find-style";
    style.textContent =
      "::highlight(webgpu-llm-find) { background-color: #fde68a; color: inherit; }" +
      "::highlight(webgpu-llm-find-best) { background-color: #fbbf24; color: #000; }";
    document.head.append(style);
  }
  CSS.highlights.set("webgpu-llm-find-best", new Highlight(...ranges.slice(0, 1)));
  CSS.highlights.set("webgpu-llm-find", new Highlight(...ranges.slice(1)));
  ranges[0]?.startContainer.parentElement?.scrollIntoView({ block: "center", behavior: "smooth" });
  return { highlighted: ranges.length };
}

/** Run findOnPage in `tabId` (errors explained as for readTab). */
export async function findInTab(tabId, marks) {
  if (tabId == null) throw new Error("There is no active tab to read.");
  let results;
  try {
    results = await chrome.scripting.executeScript({ target: { tabId }, func: findOnPage, args: [MAX_PASSAGES, PASSAGE_CHARS, marks ?? null] });
  } catch (err) {
    throw new Error(explainScriptingError(String(err?.message ?? err)));
  }
  const r = results?.[0]?.result;
  if (!r) throw new Error("The page did not answer (it may still be loading, or it is not a web page). Try again.");
  return r;
}
