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
